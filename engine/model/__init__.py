r"""The model and its two verbs: the autoencoder, precision, checkpoints, training, encoding, ranks and launch.

``zspace train --run DIR [--epochs 24] [--batch-size 64] [--z-dim 256] [--widths 32,64,64,64] [--loss bce|mse]
[--precision auto|fp32|bf16|fp16] [--resume] [--overwrite] [--nproc N]`` trains the autoencoder. ``auto``
precision is bf16 autocast on CUDA (fp16 + GradScaler where bf16 is missing), fp32 on CPU. Writes
``checkpoints/last.pt`` every epoch and ``best.pt`` (lowest validation loss); ``--resume`` continues exactly
where it stopped. ``--nproc N``: N ranks on this machine (below); ``--batch-size`` is always the global batch.
``RUN/train/recon_eNNN.png`` shows fixed test images (top row) over their reconstructions after epoch NNN.

``--model ae|vae|rae [--beta B] [--z-reg W] [--decoder-l2 L]`` picks the family on the same encoder/decoder
(``engine.model.autoencoder``): ``ae``, the study's plain autoencoder (the default, unchanged); ``vae``, whose
encoder also gives a log-variance, trained by the reparameterisation trick on reconstruction + beta x KL to
N(0, I) (``encode`` writes the posterior mean as ``z`` and ``logvar`` beside it; ``compare`` adds the ``prior``
sampler); ``rae`` (Ghosh et al. 2020), deterministic, with W x |z|^2/2 and an L2 penalty L/2 x |theta|^2 on the
decoder's weights. The latent terms are per image and divided by its 3 S^2 pixel values, as the pixel loss is,
so beta 1 with ``--loss bce`` is the negative ELBO per pixel (a Bernoulli decoder). The checkpoint records the family and every later stage reads it; resume,
``--nproc``, mixed precision and the divergence checks work alike for all three, and the validation loss is
the reconstruction term alone, comparable across families.

``zspace encode --run DIR [--checkpoint PATH] [--overwrite] [--nproc N]`` streams the latent of every image
into ``DIR/latents.zarr``, with each image's reconstruction error. Resumes when interrupted (with any
``--nproc``); does nothing when the store is complete for the same checkpoint; latents brought in with
``import-latents`` are replaced only with ``--overwrite``.

Several processes, GPUs and machines
------------------------------------
Training and encoding run on PyTorch's own engine: ``DistributedDataParallel``,
launched by ``torchrun``. On one machine, ``--nproc N`` starts N ranks with
torchrun's standalone launcher (one GPU per rank on CUDA, backend nccl; CPU
ranks with backend gloo otherwise)::

    zspace train  --run runs/celeba --nproc 8 --batch-size 512     # 8 GPUs, 64 images each per step
    zspace encode --run runs/celeba --nproc 8                      # 8 ranks fill one latents.zarr
    zspace run /data/celeba --run runs/celeba --nproc 8            # train and encode on 8 ranks, the rest in one process

Across machines, start the same ``zspace train`` under torchrun on every machine
(the run directory on storage all of them read and write, e.g. NFS or Lustre;
``--`` keeps torchrun from reading zspace's ``--run`` as its own ``--run-path``)::

    # on each of the 2 machines; HOST is one of them, reachable from the other on PORT
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 --rdzv-id celeba \
        --no-python -- zspace train --run /shared/runs/celeba --batch-size 1024
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 --rdzv-id celeba-enc \
        --no-python -- zspace encode --run /shared/runs/celeba
    zspace run /data/celeba --run /shared/runs/celeba              # then the analyses, in one process

- **The same training as one process.** ``--batch-size`` is the global batch:
  each of N ranks takes batch-size / N rows of the same global batch (the order
  is a function of seed and epoch) and reads only those from ``images.zarr``;
  batch norm computes its statistics over all ranks (torch's ``SyncBatchNorm`` on
  CUDA; on CPU, where torch's refuses to run, an all-reduce batch norm of the
  same arithmetic), and DDP averages the gradients. A batch size that does not
  divide is an error before anything starts. Measured on 2 CPU ranks: after one
  epoch the weights differ from one process's by 1.5e-4 at most, exactly as
  much as one process on 2 threads differs from itself on 1 thread (sums in
  another order); with per-rank batch norm they would differ by 2e-2.
- **Rank 0 alone writes** checkpoints, ``log.jsonl``, figures and the config (a
  test audits every file rank 1 opens). A checkpoint holds the plain model, so
  it loads in one process, and ``--resume`` works with any N, including another N
  than the run that wrote it.
- **A rank that fails** (an exception, a killed process, a lost machine) ends
  the whole job: torchrun stops the other ranks, and zspace names the rank and
  its cause (``zspace train: error: rank 1 failed: killed by signal 9; ...``; a
  bug comes with the rank's traceback); collectives time out after
  ``--rank-timeout`` seconds (600) instead of hanging. Checkpoint writes hold
  SIGTERM and Ctrl-C back until the file is complete, so no temporary file is
  left behind.
- **Encode ranks** take disjoint, contiguous ranges of the row chunks still to
  do and write only their own chunks; after each round rank 0 records the
  finished chunks (``chunks_done`` in the store's attributes), so an interrupted
  encode resumes with any N. The latents equal a one-process encode bit for bit.
- **Precision** as in one process: bf16 autocast on CUDA where supported, fp16
  with a GradScaler otherwise, fp32 on CPU. The tests run fp16 + GradScaler and
  bf16 on CPU ranks, so every line a GPU user runs, but the device transfer and
  nccl, runs in CI.
- **Threads.** ``--nproc`` gives each CPU rank cores / N threads
  (``OMP_NUM_THREADS``, unless you set it). Under an external torchrun set it yourself.

What the synchronisation costs on CPU ranks (the ``train_ddp_cpu`` row) and what N GPUs should
expect: ``bench/RESULTS.md``.
"""

"""zspace's engine: one data flow, and the code laid out along it.

::

    SOURCE --prepare--> RUN/images.zarr --train--> RUN/checkpoints/ --encode--> RUN/latents.zarr
    latents.zarr --stats / structure / tsne--> RUN/<stage>/*.json, *.png
    checkpoint + latents --generate / paths / compare--> RUN/generate/      everything --report--> RUN/report/
    latents + maps + images + decoder --explore--> RUN/explore/ (an offline page of every point)

Design
------
``cli.py`` only parses arguments and calls one engine function per verb. Each stage
is a plain function over a run directory (it reads the stores and JSON before it
and writes its own folder), so it runs alone, from ``zspace run``, or from a
notebook. One table, ``engine/stages.py``, names every stage with its function, its
config class, what it reads and its main output; the command line, the pipeline,
the report and the benchmark read it. Every default lives once, in the stage's
config dataclass (``engine/*/config.py``, light modules that import no torch);
unknown config keys are errors and the resolved config is saved beside the
outputs. The fitted normal of the cloud is computed in one place,
``engine.analysis.gaussian.GaussianFit`` (streamed block moments; mean, covariance,
descending eigenvalues, eigenvectors with a deterministic sign, ``whiten``,
``mahalanobis2``, ``sample``), and every stage that needs a null model, a whitening or
principal axes uses it. Samplers follow scikit-learn's ``fit``/``sample``; training
follows nanoGPT's single loop with an atomically written, resumable checkpoint.
``kernels/`` holds pure numba functions over C-contiguous arrays, each with the numpy
reference it is tested against. Serial variants are cached on disk (``cache=True``),
threaded ones are not (numba's cache of ``parallel=True`` is unreliable), so inputs
under about a million elements run the cached serial variant: a ``zspace stats`` of
1,000 x 256 latents in a new process took 4.6 s with the cache warm (7.5 s the very
first time) against 15.1 s when every call compiled its threaded kernel (2-core
Intel Xeon, one run each). Figures go through matplotlib's object API
(``Figure`` + ``FigureCanvasAgg``): importing zspace changes no backend or global state.

Layout
------
::

    cli.py              the zspace command: argument parsing only
    engine/
      config.py         config_from_dict: unknown keys are errors
      layout.py         the run directory: every path a stage reads or writes
      files.py          atomic writes (temporary file, fsync, rename)
      stores.py         Zarr stores that can be verified: every chunk a reader needs is on disk
      figures.py        image grids and matplotlib figures without pyplot
      stages.py         the one table of stages
      data/             sources (CelebA, folders, synthetic), synthetic faces, the image cache, the training feed
      model/            the autoencoder (ae, vae, rae), precision, checkpoints, training, encoding, the attribute
                        classifier; ranks (process group,
                        synchronised batch norm) and launch (--nproc: torchrun's standalone launcher)
      latents/          the latent store (open, stream in blocks), import of outside latents
      analysis/         GaussianFit, distributions, stats, structure, kNN, planes, t-SNE (+ their figures);
                        cluster (--dask: block tasks on Dask) and blockwise (structure's tasks over Zarr blocks);
                        torch_kernels (exact kNN and local PCA as blocked torch on a GPU)
      generation/       samplers, decoding, paths, the judge, the quality judge, compare, facemap
      attributes/       attribute readouts, directions, decoded traversals judged by the attribute classifier
      report/           the report page
      explore/          the explore page: a WebGL map of every point (Bokeh), thumbnails, the decoder in JS
      contrast/         several runs side by side: what holds in every run, what differs
      pipeline.py       zspace run: the stages in order, skipping finished ones; zspace verify
    kernels/            numba kernels and the numpy references they are checked against
    tests/              pytest: planted structures, numpy/sklearn/scipy references, the CLI, the browser
    bench/              the benchmark harness, results.json, RESULTS.md

Imports flow one way, data <- model <- latents <- analysis <- generation <- attributes <- report <-
explore <- contrast <- pipeline <- cli; ``tests/test_layout.py`` reads every module's imports and fails on
an upward import, a cycle, an import hidden in a function or a private name taken
from another module. Each subpackage's docstring describes its verbs in full
(``engine.data``: prepare; ``engine.model``: train, encode, several processes and
machines; ``engine.latents``: import-latents; ``engine.analysis``: stats, structure,
tsne, ``--dask``; ``engine.generation``: generate, paths, judge, compare, facemap;
``engine.report``: report; ``engine.explore``: explore).

Memory
------
What streams and what holds rows in memory (N rows of D float32 = 4ND bytes;
202,599 x 256 is 207 MB):

=====================  ==========================================================================
stage                  memory
=====================  ==========================================================================
prepare, train, encode stream the image cache in chunk-aligned blocks (training keeps the train
                       split in memory when it fits, else streams it)
import-latents         streams its input in 64 MB blocks
stats                  streams ``latents.zarr`` three times in ~16 MB blocks; holds only a few
                       (N,) float64 vectors and D x D matrices
structure              loads the analysed rows (all, or ``--sample N``) and as many null points:
                       the kNN graph needs them
tsne                   loads the ``--n`` embedded rows and their null
paths                  streams the fit (``GaussianFit``); loads 5,000 random rows for the figure
generate, compare      load all rows of z (samplers are fitted on the whole cloud; FAISS indexes
                       the training latents)
report                 reads JSON and figures only
explore                holds the map's rows of z (and its columns) and decodes them in blocks
=====================  ==========================================================================

The pipeline's verbs (engine.pipeline)
--------------------------------------
``zspace run [SOURCE] --run DIR [--quick] [--until STAGE] [--model ae|vae|rae] [--epochs N] [--size S]
[--z-dim D] [--k K] [--tsne-n N] [--attrs FILE] [--compare-n N] [--facemap-n N] [--seed S] [--nproc N]
[--dask ADDRESS|local:N]``: the main job: prepare, train, encode, stats, structure, tsne, attributes, compare,
facemap, report and explore (with zspace[explore]) in order. A stage that
finished with the same options and inputs is skipped; an interrupted one runs again and resumes (prepare,
train and encode pick up where they stopped); a changed option reruns that stage and every stage after it
(keys in ``DIR/pipeline.json``). Prints each stage's time and where the report is. SOURCE defaults to the
built-in ``synthetic:10000`` (``synthetic:3000`` with ``--quick``: 3,000 faces, 4 epochs, smaller maps and
comparisons). ``--nproc N`` runs train and encode on N ranks and the rest in one process; ``--dask`` runs
stats, structure and tsne on a Dask cluster.

``zspace contrast RUN_A RUN_B [...] --out DIR``: several runs side by side (engine.contrast): every headline
number of each run in one table, each row 'holds' in every run or 'differs' by a rule fixed before the
numbers, and the runs' radius, dominant-component, compare and face-map figures side by side in
``DIR/index.html``.

``zspace verify --run DIR``: checks the image cache and the latent store (every chunk on disk), both
checkpoints (readable, finite weights) and every stage's JSON; prints one line per item, ``ok`` or
``DAMAGED`` with the command that rebuilds it, and exits 1 when something is damaged.

``zspace bench [--small] [--only STAGE,...] [--out DIR]`` (bench/, not engine/): times every stage against
the baseline a user would otherwise write; how it measures and what it measured: ``bench/RESULTS.md``.

Every verb on a small synthetic set (about 3 minutes on 2 cores)::

    zspace prepare synthetic:2000 --run runs/s                       # -> runs/s/images.zarr
    zspace train --run runs/s --epochs 3
    zspace train --run runs/s --epochs 6 --resume                    # three more epochs
    zspace encode --run runs/s                                       # -> runs/s/latents.zarr
    python -c "import zarr; print(zarr.open_group('runs/s/latents.zarr')['z'].shape)"   # (2000, 256)
    zspace stats --run runs/s                                        # -> runs/s/stats/
    zspace structure --run runs/s --k 16                             # -> runs/s/structure/
    zspace tsne --run runs/s --n 2000                                # -> runs/s/tsne/tsne.png
    zspace generate --run runs/s --sampler mvn --n 64 --seed 1       # -> runs/s/generate/mvn/grid.png
    zspace paths --run runs/s --pcs 1,2 --pcs 8,35 --axes 3,7 --angle 30
    zspace judge runs/s/generate/mvn/images.npy                      # face count, rate, 95% CI as JSON
    zspace compare --run runs/s --n 300                              # -> runs/s/generate/compare.md
    zspace facemap --run runs/s --n 400                              # -> runs/s/facemap/: region or voids?
    zspace report --run runs/s                                       # open runs/s/report/index.html
    zspace explore --run runs/s                                      # open runs/s/explore/index.html
    zspace run synthetic:2000 --run runs/v --quick --model vae       # a VAE of the same architecture
    zspace contrast runs/s runs/v --out runs/ae_vs_vae               # what holds in both -> index.html
    zspace import-latents my_latents.npy --run runs/mine && zspace stats --run runs/mine
    zspace bench --small                                             # -> bench/small/RESULTS.md

CelebA is for non-commercial research only: nothing derived from it is kept in this repository.
"""

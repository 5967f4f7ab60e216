r"""The analysis of the latent cloud: GaussianFit, distributions, stats, structure, kNN, planes, t-SNE, --dask.

Every verb here reads only ``RUN/latents.zarr`` (``z``, plus ``ids``/``split`` when present), so it runs on
latents of any model (``zspace import-latents``). The fitted normal of the cloud (mean, covariance, principal
axes with deterministic signs, ``whiten``, ``mahalanobis2``, ``sample``) is ``engine.analysis.gaussian.GaussianFit``,
computed once and used by every stage that needs a null model.

The verbs
---------
``zspace stats --run DIR [--bin-width 0.25] [--dask ADDRESS|local:N]``: streams ``latents.zarr`` three times
in row blocks and writes ``DIR/stats/``: number density and a Gaussian fit (centre, sigma, FWHM, R^2) of every
component, automatically detected dominant components, the radius distribution at bin widths 0.5 and 0.05
against sqrt(sum(mu^2 + var)), covariance and correlation matrices with the strongest pairs, PCA (explained
variance, components for 50/90/99%, coordinates of every point into ``latents.zarr/pca``), and the
multivariate-normal test (Mahalanobis distances against chi-square, shares inside the 1/2/3-sigma ellipsoids,
for all points and for the inner core).

``zspace structure --run DIR [--k 16] [--graph-k 90] [--index exact|hnsw|ivf] [--sample N] [--dask
ADDRESS|local:N]``: the exact k-nearest-neighbour graph of all points (by default with zspace's self-join
kernel, which computes each pair's distance once, half the work of a FAISS search of the cloud against itself;
ties go to the lower row index; FAISS HNSW or IVF on request, with their recall@k against exact search
measured), local PCA of every neighbourhood (components for 90% of local variance, participation ratio,
linearity), global intrinsic dimension (TwoNN as Facco et al. publish it and as scikit-dimension and DADApy
compute it: the line through the origin of -log(1 - F(mu)) against log(mu), the largest 10% of mu = r2/r1 left
out; its plain maximum-likelihood form n / sum log mu beside it, which near-duplicates drag down;
Levina-Bickel as scikit-dimension's ``MLE``) and a void statistic, each for the data and for a null model (the
same number of points from the fitted multivariate normal), with a one-line verdict per statistic. Writes
``DIR/structure/structure.json``, figures, and ``knn_indices``, ``knn_distances`` (the nearest ``graph-k`` =
90 neighbours of every point, nearest first, so that ``zspace tsne`` of all points reuses them at perplexity
up to 30), ``local_dim``, ``local_pr``, ``local_n90``, ``local_linearity`` into ``latents.zarr``;
``local_dim`` is the participation ratio of the point's neighbourhood corrected for the few points it has (m
points of a d-dimensional normal show PR = d / (1 + d/(m-1)), so 16 neighbours of a 10-D blob read 6
uncorrected, 10 corrected). Plane views: projections onto PCA planes (1,2), (1,18), (8,35) and the plane of
the two most dominant components, windows of side 5, 1 and 0.5 around the centre, data above null, with the
share of empty raster cells inside the 95% ellipse. ``--device auto|cpu|cuda[:N]`` (auto: CUDA when present):
on a GPU the exact graph of data and null, the void probes' nearest distances and local PCA run as blocked
fp32 torch there (``torch_kernels``: the same graph as the self-join, TF32 off, tiles sized from free device
memory, a cloud larger than a quarter of it streamed by rows); on a CPU the numba kernels, which are faster
there. ``zspace tsne`` of all points then reuses the device's graph, so on a GPU machine only openTSNE's
optimisation runs on the CPU, on all its cores.

``zspace tsne --run DIR [--n 20000] [--pca K] [--perplexity 30] [--affinity perplexity|uniform] [--uniform-k
15] [--early-exaggeration 12] [--n-iter 750] [--seed 0] [--no-null] [--dask ADDRESS|local:N] [--fit-n
100000]``: an openTSNE map of N randomly chosen points (optionally after projecting onto K principal
components), beside the same map of the null model's points, both from exact neighbours (the self-join kernel;
with ``--n`` at least the number of points, the graph ``zspace structure`` wrote is reused and no search
runs); the figure shows both maps on one window at one bin per pixel with log shading, so single points, gaps
and clumps stay visible from thousands to hundreds of thousands of points; ``tsne.json`` records each map's KL
divergence and the share of each point's 15 nearest neighbours in z kept in the map; the embedding and the
chosen rows in ``DIR/tsne/embedding.npz``. ``--affinity uniform`` puts equal weights on each point's
``--uniform-k`` nearest neighbours instead of perplexity-calibrated Gaussians: a sparser P, 3.1x faster at
202,599 points, another map (quality of both in ```bench/RESULTS.md````, Benchmarks).
``engine.analysis.tsne.place_points`` places new z-points into an existing map (openTSNE ``transform``). The
study's settings: ``--n 20000 --perplexity 10 --early-exaggeration 16 --n-iter 1000`.

Definitions
-----------
A structure verdict says the data *differ* from the null when the difference of
the summaries (medians; means for counts; the global estimates) exceeds 5
bootstrap standard errors and 5% of the null's value; the two-sample KS distance
is reported beside the KS distance between two halves of the null.

In ``stats.json``, a component is *dominant* when its centre or width stands out
from the bulk: |mean - median(mean)| > max(5 robust sigmas, 1 median width), or
std - median(std) > max(5 robust sigmas, half the median width) (robust sigma =
1.4826 x MAD; the rule and its thresholds are written into the JSON). A
*k-sigma ellipsoid* is the Mahalanobis ellipsoid of the fitted normal that holds
the probability of +-k sigma in one dimension (68.27%, 95.45%, 99.73%): in 256
dimensions a Mahalanobis radius of k itself would hold almost nothing.

When one machine is not enough: ``--dask ADDRESS|local:N``
----------------------------------------------------------
The analysis stages (``stats``, ``structure``, ``tsne``, and ``zspace run`` for those
three) take ``--dask ADDRESS|local:N``: their row blocks run as tasks on a Dask
cluster, reading ``latents.zarr`` themselves (``dask.array.from_zarr``, rows
chunked, all columns in one chunk). Dask is an optional extra::

    pip install -e '.[dask]'                                   # dask[distributed]; the test extra pulls it too
    zspace stats --run runs/celeba --dask local:2              # a LocalCluster of 2 worker processes, for this command

On a cluster, start a scheduler and workers, then point zspace at the scheduler;
the run directory must be on storage every worker reads at the same path (NFS,
Lustre, a cloud file system), since workers read and write it themselves::

    dask scheduler                                             # on one machine: prints tcp://HOST:8786
    dask worker tcp://HOST:8786 --nworkers 4 --nthreads 1      # on each machine
    # or, on Slurm: dask-jobqueue's SLURMCluster(...).scale(jobs=8), and its scheduler_address
    zspace structure --run /shared/runs/celeba --dask tcp://HOST:8786
    zspace run /data/celeba --run /shared/runs/celeba --nproc 8 --dask tcp://HOST:8786

zspace prints the scheduler and dashboard it uses and a bar over the finished
tasks; a worker that cannot open the run directory is named in a one-line error;
``--dask`` without Dask installed says what to install.

- **stats**: the three passes' blocks run as tasks; their partial results
  (moments, histograms, radii, Mahalanobis distances) come back in block order and
  merge with the same formulas, so the results equal the in-process ones (the
  tests: co-moments to 1e-9 relative, histograms and the PCA coordinates the workers
  write into ``latents.zarr`` exactly). Where ``z`` takes at most a third of the
  workers' memory, it is read once and held there for the three passes (an even
  share of the blocks on each worker, persisted with Dask), else each pass reads it
  again; zspace says which (``StatsConfig(hold_blocks=True|False)`` forces it).
- **structure**: the exact kNN graph is computed in tiles of blocks of one size, at
  most 65,536 rows (200,000 rows: 4 blocks of 50,000), so the tiles share out evenly:
  each block joined with itself and with every later block, one pass over each
  pair of rows as in one process, lists merged per block by (distance, index), so
  ties go to the lower index. It equals the in-process graph except where two
  neighbours' distances agree to float32 rounding (then their order may swap; 88
  of 2.7 million entries in a 30,000-point test). The null model is drawn block by
  block on the workers (block b from the b-th child of the seed) into
  ``structure/null.zarr``, removed at the end; local PCA, the void probes and the
  plane rasters run per block. No worker holds a cloud. ``--tiles faiss`` searches
  every (query block, base block) tile with ``faiss.knn`` instead (each pair twice,
  merged the same way; equal to the join's graph to float32 rounding: a test
  checks it, an exact duplicate included); the join tiles are the default because
  on a CPU they do half the work and their kernel is faster (bench ``knn_exact``).
- **tsne**: with more than ``--fit-n`` points (100,000), the map is fitted on that
  many in the client and the others are placed into it with openTSNE's ``transform``
  as tasks (a test plants 5 clusters and finds 98% of all points, placed ones
  included, next to a point of their own cluster).
- Dask retries a task whose worker died (a test kills a worker mid-graph: same
  graph; another kills one between the stats passes: its held blocks are read
  again elsewhere and the stats are unchanged).

What the cluster costs against one process (the ``stats_dask``, ``knn_dask`` and ``structure_dask`` rows,
medians of 3 runs): ``bench/RESULTS.md``.
"""

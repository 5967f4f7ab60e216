r"""Property of the faces or of one model? Several runs side by side (``zspace contrast``).

``zspace contrast RUN_A RUN_B [...] --out DIR`` reads what the stages of each run wrote (nothing is computed
again) and writes ``DIR/contrast.json``, ``DIR/contrast.md`` and a page ``DIR/index.html`` with the figures of
the runs side by side (radius, dominant components, compare, face map against radius) copied into
``DIR/figures/``.

Every headline number is one row: the run's setting (family, z_dim, seed, epochs, validation loss), what the
study observed (dominant components, the radius peak against its expectation, principal components for 90%
of the variance, KS distance from the fitted normal), every structure statistic's verdict against the null,
the t-SNE KL divergence of the data against the null, the face rate of every sampler and the face map's
verdict. Each judged row says ``holds`` (in every run) or ``differs``, by ``RULE``, fixed before the numbers:

* a rate with a 95% interval holds when the intervals of all runs share a point (max lo <= min hi);
* a verdict or a count holds when it is the same in every run;
* a number without an interval holds when its spread, max - min, is at most ``TOLERANCE`` (10%) of the
  largest magnitude among the runs.

Two cautions across families. The samplers marked *absolute scale* (``uniform``, ``origin``, ``prior``) put
z-points at fixed coordinates, while a vae's KL pulls its latents toward unit scale, an rae's penalty shrinks
them and an ae's scale is arbitrary: a difference there may be one of scale, not of structure. And a vae's
rows describe the posterior means ``z`` that ``encode`` writes, not draws from the posterior; components the
KL collapsed show as narrow ones.

Settings are shown, not judged. A row whose stage did not run in some run is ``not run`` there and is judged
on the runs that have it, when at least two do. A finding that holds across families and seeds is a property
of the data; one that holds in one run of one model is reported as such.
"""

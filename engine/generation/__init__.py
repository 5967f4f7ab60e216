r"""From z-points back to images: samplers, decoding, paths, the judge, compare and the face map.

Every decoded image is judged by an independent detector (OpenCV's Haar cascade, ``zspace judge``), not by
the model that made it; distances to the data are exact searches of the training latents
(``engine.generation.cloud``: a FAISS flat index on a CPU, blocked fp32 torch when decoding runs on a GPU), so
``compare`` and ``facemap`` speak of the same distances.

``zspace generate --run DIR --sampler NAME [--n 64] [--seed 0]``: draws z-points from a sampler fitted to the
latents and decodes them with the run's best checkpoint into ``DIR/generate/NAME/`` (grid.png, z.npy,
images.npy, sampler.json). Samplers: ``uniform`` (every component in [-1.5, 1.5], the study's independent
random vectors), ``box`` (each component within its mean +- 2 sigma), ``gauss`` (independent fitted normals),
``mvn`` (full covariance), ``mvn-core`` (inside the median Mahalanobis radius), ``gmm`` (10 full-covariance
components), ``origin`` (z = 0 and small spheres around it), ``data`` (latents of held-out test images: the
reference reconstructions), ``prior`` (N(0, I): a vae's own sampler; compare adds it for a vae).

``zspace paths --run DIR [--axes I,J ...] [--pcs P,Q ...] [--angle 0] [--length 4] [--steps 9] [--between
ID_A,ID_B] [--extend 0.5]``: decodes z-points on paths into ``DIR/generate/paths/``: the line from the origin
to the centre of the cloud (6 points), straight segments through the centre inside the plane of coordinate
axes I and J (``--axes``, 0-based, repeatable; default the two most dominant components) and inside the plane
of principal axes P and Q (``--pcs``, 1-based, repeatable; default 1,2), rotated by ``--angle`` degrees within
the plane and ``--length`` times the cloud's spread along that direction long, and optionally the line between
two images' latents extended beyond them. Each figure shows 5,000 projected data points (blue), the origin
(yellow), the centre (orange), the path (red) and the decoded strip under it.

``zspace judge IMAGES [--size 96]``: the independent judge: the share of images in which OpenCV's Haar
frontal-face cascade (from the opencv-python-headless wheel; grayscale, 128 px, equalised histogram,
scaleFactor 1.1, minNeighbors 4, minSize 40%) finds a face, with a 95% Wilson interval, and the mean sharpness
(variance of the Laplacian). IMAGES is a folder of PNG/JPEG, an image, or an .npy/.npz array (N, S, S, 3).
Calibrated on 600 real CelebA test-size images: 95.5% faces; uniform noise 0%, smoothed noise 0.2%,
upside-down faces 35% (a weak negative control: Haar features are largely symmetric).

``zspace compare --run DIR [--n 1000] [--seed 0]``: runs every sampler and every path family with the same
seed and judges the decoded images: face rate with its 95% interval, latent consistency (median distance a
z-point moves when its image is re-encoded, in units of the cloud's spread), distance to the data (median
distance to the nearest training latent, exact, over the typical nearest-neighbour distance among training
latents), Mahalanobis radius over the data's, and sharpness against the reconstructions; with the judge's
calibration (real test images, reconstructions, uniform and smoothed noise, upside-down faces). Writes
``DIR/generate/compare.json``, ``compare.md`` (the tables), ``compare.png`` and a grid per sampler.

``zspace facemap --run DIR [--n 4000] [--seed 0]``: answers the study's open question: is a z-point a face
because it lies in the region, or because it lies on the data (and not in a void)? Radius sweep: z-points at
Mahalanobis radius r = 0, 0.1, ..., 2.0 times the training latents' median radius, along random whitened
directions and along the principal axes (both signs), decoded and judged: the face rate against r with 95%
Wilson bands (where the face region ends; whether it has a hole at the centre). Void depth at fixed radius:
four probe families moved to exactly the median radius (draws of the fitted normal; training latents moved a
uniform fraction toward such a draw; midpoints of near pairs, a latent and one of its 5 nearest; midpoints of
random pairs), their void depth = distance to the nearest training latent (exact search) over the typical
neighbour distance among training latents, in 8 equal-count bins with the face rate of each. A logistic model
of P(face) on (radius ratio, depth) with bootstrap intervals, and a verdict by a rule written into
``facemap.json`` before the numbers (voids matter when the shallowest and deepest depth bins' intervals are
disjoint; the region matters when the sweep's highest and lowest face rates' intervals are disjoint). Writes
``DIR/facemap/`` (facemap.json, facemap.md, probes.npz, radius.png, depth.png, map.png, strip.png).
"""

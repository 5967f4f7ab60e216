"""Images in: sources (CelebA, any image folder, the built-in synthetic faces), the image cache, the training feed.

``zspace prepare SOURCE --run DIR [--size 96] [--limit N] [--workers W] [--overwrite]`` decodes and resizes
every image once, in parallel worker processes, into ``DIR/images.zarr``. SOURCE is a CelebA root, an image
folder, or ``synthetic:N[:SEED]``. Corrupt files are skipped, counted and listed in the store's attributes.
An interrupted prepare resumes; a finished one does nothing. ``--limit N`` keeps N images spread evenly over
the listing.

Real CelebA
-----------
Download "Align&Cropped Images" of CelebA and keep the official layout::

    celeba/
      img_align_celeba/000001.jpg ... 202599.jpg   (or img_align_celeba.zip holding that folder)
      list_eval_partition.txt                       (0 train, 1 validation, 2 test)
      identity_CelebA.txt                           (optional, read when present)
      list_attr_celeba.txt                          (optional: the 40 attributes, stored beside the images)

then ``zspace run celeba/ --run runs/celeba``, or stage by stage::

    zspace prepare celeba/ --run runs/celeba            # decode, crop, resize once -> images.zarr
    zspace train --run runs/celeba --epochs 24          # -> checkpoints/, train/
    zspace encode --run runs/celeba                     # -> latents.zarr

Rows of the partition file without an image are ignored; without the file the
split is a deterministic 80/10/10 from a CRC-32 of each file name. Any other
folder of images works too (recursive, .jpg/.jpeg/.png; grayscale becomes RGB,
transparent pixels are composited over white).

Preprocessing (as in the study): the centred square crop of the aligned
image, its side the shorter edge (CelebA's 178x218 -> rows 20..197, all 178
columns), resized to 96x96 with PIL's antialiased bilinear filter. Where the
output is at most half the crop, JPEGs are decoded in draft mode (libjpeg's DCT
scaling), which is several times cheaper (``engine.data.sources``).

The synthetic default, ``synthetic:N[:SEED]``: procedural cartoon faces, seeded, no download
(``engine.data.synthetic``); ``zspace run`` with no SOURCE uses ``synthetic:10000``.

Labels (``engine.data.labels``): prepare stores a CelebA root's ``list_attr_celeba.txt`` (or
``list_attr_celeba.csv``) and the attributes synthetic:N plants as ``images.zarr/attributes``,
int8 (N, A), 1/0 and -1 for an image without a label row. ``run_labels(RUN, FILE)`` reads
any other label file (the official format or a CSV with a file-name column) and matches
its rows to the run's images by file name.
"""

r"""The latent store ``RUN/latents.zarr`` (open, stream in row blocks) and the import of outside latents.

``z`` float32 (N, D) in row chunks of about 4 MB, ``ids``, ``split``, ``recon_mse``; the analysis verbs need
only ``z`` (plus ``ids``/``split`` when present), so latents of any model can be studied.

``zspace import-latents FILE --run DIR [--drop-nonfinite] [--overwrite]``: brings latents of any model: an (N,
D) array in .npy, .npz (array ``z`` or the first) or Zarr becomes ``DIR/latents.zarr``. Wrong rank,
non-numeric data and NaN/inf rows are errors naming the file, the shape and the first bad row;
``--drop-nonfinite`` drops and counts such rows instead.
"""

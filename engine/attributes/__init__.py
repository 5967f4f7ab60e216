"""What the faces show, in z-space: attribute labels against the latent cloud (``zspace attributes``).

Reads the labels kept in ``images.zarr`` (CelebA's ``list_attr_celeba.txt``, the planted attributes of
``synthetic:N``) or given with ``--attrs FILE``, and writes ``RUN/attributes/``: the linear readout of every
attribute from z, which components carry which attribute (and the study's claim about the dominant ones as a
test), attribute directions, decoded traversals along them, and the judgement of those traversals by an
attribute classifier zspace trains on the real images (``engine.model.classifier``).
"""

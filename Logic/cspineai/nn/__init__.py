"""Neural network building blocks and networks of CSpineAI (PyTorch, MONAI).

One module per concept; import the one you need (nothing is imported here, so that loading one network does not load
the others):

- :mod:`cspineai.nn.abpdc`: ``DifferenceConv``, the plain / CDC / PDC / ACDC / ABPDC convolution (paper 000, §2.2);
- :mod:`cspineai.nn.backbone`: ``PyramidBackbone``, the per-modality four-level feature pyramid (§2.1);
- :mod:`cspineai.nn.classifier`: ``build_classifier``, the two-branch outcome classifier and its MONAI baselines;
- :mod:`cspineai.nn.fpran`: the feature-pyramid registration network (§2.3);
- :mod:`cspineai.nn.sattisunet`: the cord and vertebral-level segmentation network (paper 001).
"""

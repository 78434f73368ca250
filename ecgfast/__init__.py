"""ecgfast: self-supervised ECG representation learning, fast at both ends.

Import what you need from the submodules:

- :mod:`ecgfast.models`: :class:`~ecgfast.models.EncoderConfig`,
  :class:`~ecgfast.models.ECGEncoder` and the heads.
- :mod:`ecgfast.losses`: :func:`~ecgfast.losses.nt_xent` and the SSL-ECG pretext loss.
- :mod:`ecgfast.transforms`: the six SSL-ECG transformations and the contrastive
  augmentations, batched on the tensor's device.
- :mod:`ecgfast.data`: the synthetic ECGSYN cohort, readers and pre-processing.
- :mod:`ecgfast.training`, :mod:`ecgfast.evaluation`: pretraining and probing.
"""

__version__ = "0.1.0"

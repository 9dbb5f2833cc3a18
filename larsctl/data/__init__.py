"""ImageNet from the official archives to what the trainer reads (`larsctl data`).

- prepare.py: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and the validation labels
  (labels.py says which files) -> ImageFolder train/<wnid>/, val/<wnid>/
- convert.py: ImageFolder -> TFRecord shards with DALI index files (the reference layout)
- verify.py: checks either layout (classes, counts, labels, indexes, checksums, decoding)
- bench.py: the trainer's input pipeline on this node against what a plan needs
- images.py: Pillow decoding and RGB JPEG re-encoding; common.py: the output directory's
  claim, lock and manifest, durable writes, worker processes, progress
- sample.py: small archives in the official structure (`python -m larsctl.data.sample`)

Imports here stay light: the command loads a module when it runs.
"""

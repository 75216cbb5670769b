"""Image classification: ImageNet CNN backbones as compact torch modules (no torchvision)."""

"""Raw inputs to tensors and features: images, video, point clouds, text, and the backbones."""

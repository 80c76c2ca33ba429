"""The networks of the course, one module per model, written to be read.

- `sdlearn.models.classifier`: a small convolutional classifier (lesson 01's magic function)
- `sdlearn.models.unet`: the noise-predicting U-Net, pixel (UNet2DModel) or text-conditional
  (UNet2DConditionModel) layout, with diffusers' module names and arguments (lesson 07)
- `sdlearn.models.attention`: attention written out, `Attention` and the spatial transformer
  inside the U-Net (lesson 08)
- `sdlearn.models.conversion`: configurations and weights between our U-Net and diffusers'
- `sdlearn.models.autoencoder`: a plain and a variational autoencoder (lesson 09), and helpers
  for diffusers' `AutoencoderKL`
- `sdlearn.models.clip`: a small CLIP, image and text encoders trained to agree (lesson 12)

Attention maps are recorded from outside the models, by `sdlearn.attention_maps`.
"""

from sdlearn.models.attention import Attention, SpatialTransformer
from sdlearn.models.autoencoder import Autoencoder, AutoencoderConfig
from sdlearn.models.classifier import ClassifierConfig, SmallClassifier
from sdlearn.models.clip import CLIPConfig, SmallCLIP
from sdlearn.models.unet import UNet, UNetConfig

__all__ = ["Attention", "Autoencoder", "AutoencoderConfig", "CLIPConfig", "ClassifierConfig", "SmallCLIP",
           "SmallClassifier", "SpatialTransformer", "UNet", "UNetConfig"]

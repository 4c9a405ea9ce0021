"""Score networks (MLP, U-Net, diffusers' UNet2DModel), diffusers checkpoints as score models, the
prediction parameterisation (eps / score / x0 / v) and EMA.

The network's time input and the meaning of each prediction are written down in
`models.parameterization`.
"""

from score_sde.models import parameterization
from score_sde.models.classifier import NoisyClassifier, NoisyConvClassifier
from score_sde.models.diffusers_unet import DiffusersUNet
from score_sde.models.ema import EMA
from score_sde.models.embeddings import GaussianFourierFeatures, LabelEmbedding, SinusoidalFeatures
from score_sde.models.mlp import MLP
from score_sde.models.parameterization import PREDICTIONS
from score_sde.models.pretrained import PretrainedUNet, from_diffusers
from score_sde.models.score_model import Prediction, ScoreModel
from score_sde.models.unet import UNet

__all__ = [
    "MLP", "UNet", "DiffusersUNet", "ScoreModel", "Prediction", "EMA", "PREDICTIONS", "parameterization",
    "from_diffusers", "PretrainedUNet",
    "GaussianFourierFeatures", "SinusoidalFeatures", "LabelEmbedding",
    "NoisyClassifier", "NoisyConvClassifier",
]

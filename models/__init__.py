"""Score networks (MLP, U-Net), the prediction parameterisation (eps / score / x0 / v) and EMA.

The network's time input and the meaning of each prediction are written down in
`models.parameterization`.
"""

from models import parameterization
from models.classifier import NoisyClassifier, NoisyConvClassifier, classifier_loss
from models.ema import EMA
from models.embeddings import GaussianFourierFeatures, LabelEmbedding, SinusoidalFeatures
from models.mlp import MLP
from models.parameterization import PREDICTIONS
from models.score_model import Prediction, ScoreModel
from models.unet import UNet

__all__ = [
    "MLP", "UNet", "ScoreModel", "Prediction", "EMA", "PREDICTIONS", "parameterization",
    "GaussianFourierFeatures", "SinusoidalFeatures", "LabelEmbedding",
    "NoisyClassifier", "NoisyConvClassifier", "classifier_loss",
]

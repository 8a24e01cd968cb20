"""The decoder: a small network from the concatenated dimension to a Matryoshka output,
trained without labels to preserve the pairwise cosine similarities of its input.

``model`` (the network and :func:`decode`), ``losses`` (one function a loss), ``strategies``
(PCA start, SMEC's sequential stages, ADS, the cross-batch memory), ``training`` (the loop),
``io`` (safetensors + JSON files).
"""

from cecq.decoder.io import CONFIG_FILE, WEIGHTS_FILE, load_decoder, save_decoder
from cecq.decoder.losses import cosine_matrix, memory_loss, mrl_similarity_loss, neighbour_pair_weights, selection_views
from cecq.decoder.model import Decoder, decode, output_layer, trimmed
from cecq.decoder.strategies import (
    ADS_LR_SCALE,
    ADS_SPACING,
    MemoryQueue,
    apply_selection,
    initial_importance,
    pca_initialise,
    training_stages,
)
from cecq.decoder.training import TrainingStats, train_decoder
from cecq.errors import DimensionMismatchError

__all__ = [
    "ADS_LR_SCALE",
    "ADS_SPACING",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "Decoder",
    "DimensionMismatchError",
    "MemoryQueue",
    "TrainingStats",
    "apply_selection",
    "cosine_matrix",
    "decode",
    "initial_importance",
    "load_decoder",
    "memory_loss",
    "mrl_similarity_loss",
    "neighbour_pair_weights",
    "output_layer",
    "pca_initialise",
    "save_decoder",
    "selection_views",
    "train_decoder",
    "training_stages",
    "trimmed",
]

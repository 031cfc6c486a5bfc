"""The PyTorch side: architectures, training, evaluation and the trained model zoo.

Installed as ``accel_sim.models`` (see ``setup.cfg``), kept in the top-level ``models/`` folder
beside the zoo it describes.
"""

from accel_sim.models.architectures import ARCHITECTURES, build_model
from accel_sim.models.user import build_user_model, load_user_model
from accel_sim.models.zoo import load_state, load_weights, save_weights, zoo_weights_path

__all__ = ["ARCHITECTURES", "build_model", "build_user_model", "load_state", "load_user_model", "load_weights",
           "save_weights", "zoo_weights_path"]

"""Package discovery (metadata lives in setup.cfg).

Every package under ``accel_sim/`` is found automatically; ``accel_sim.models`` is kept in the
top-level ``models/`` folder beside its zoo, so it is mapped by hand.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["accel_sim", "accel_sim.*"]), "accel_sim.models"],
    package_dir={"accel_sim.models": "models"},
)

"""``wukong simulate``: a discrete-event simulation of Wukong, and of a centralized scheduler, at
cloud scale (10,000 to 1,000,000+ tasks). Pure computation; docs/simulator.md has the model.
"""

from wukong.simulate.central_sim import simulate_central
from wukong.simulate.model import SimModel
from wukong.simulate.report import SimResult, comparison_table
from wukong.simulate.shapes import SHAPES, SimGraph, make_shape
from wukong.simulate.wukong_sim import simulate_wukong

__all__ = ["SHAPES", "SimGraph", "SimModel", "SimResult", "comparison_table", "make_shape",
           "simulate_central", "simulate_wukong"]

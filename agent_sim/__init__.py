"""Node-side code: the `NodeAgent` SDK, seeded simulated behaviour and fleets.

`agent_sim.agent` is what a real GPU node embeds; `agent_sim.behaviour` is pure
(seeded capabilities, service times, faults); `agent_sim.fleet` runs many
simulated agents in one process; `agent_sim.cli` is the `agent-sim` command.
"""

from agent_sim.agent import JobContext, JobFailed, NodeAgent
from agent_sim.behaviour import Behaviour, FaultDecision, Profile, get_profile, node_capabilities
from agent_sim.fleet import Fleet

__all__ = [
    "Behaviour",
    "FaultDecision",
    "Fleet",
    "JobContext",
    "JobFailed",
    "NodeAgent",
    "Profile",
    "get_profile",
    "node_capabilities",
]

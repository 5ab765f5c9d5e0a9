"""What the parts of one `NodeAgent` share: its identity, capabilities and lifecycle flags.

`agent_sim.agent.NodeAgent` creates one `AgentState` and hands it to its
`JobRunner` (agent_sim.jobs) and `ConnectionLoop` (agent_sim.connection).
Only `NodeAgent` writes it: `capabilities` is replaced by
`update_capabilities` and read at every `register` and `job_assign` (the busy
check); `draining` is set by `drain` (job_assigns are then rejected and the
loop does not reconnect); `stopping` is set by `aclose` (the loop stops, and
a drop is not counted as a disconnect).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.core.messages import Capabilities

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["AgentState"]


class AgentState:
    """The node's id, its current capabilities, its logger and the lifecycle flags."""

    __slots__ = ("capabilities", "draining", "log", "node_id", "stopping")

    def __init__(self, *, node_id: str, capabilities: Capabilities, log: Logger) -> None:
        self.node_id = node_id
        self.capabilities = capabilities
        self.log = log
        self.draining = False
        self.stopping = False

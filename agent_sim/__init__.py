"""Node-side code: the `NodeAgent` SDK, a small hub client, seeded simulated behaviour and fleets.

What a node author needs is importable from here: `NodeAgent` and what its
handler sees (`JobContext`, `JobFailed`, `JobRejected`), `run_node` (serve until
SIGTERM, then drain), the capability model it advertises (`Capabilities`,
`LanguagePair`, `Pipeline`, re-exported from `hub.core.messages`) and
`HubClient` to submit jobs (its futures fail with `ConnectionLost` when the
connection drops unanswered). The guide is docs/sdk.md; examples/ has a node and
a client.

The modules:

- `agent_sim.agent`: `NodeAgent`, the SDK a real GPU node embeds; it holds
  its parts `agent_sim.connection` (connect, register, heartbeat, reconnect),
  `agent_sim.jobs` (accept, run, report jobs), `agent_sim.frames` (send and
  receive on the current link) and `agent_sim.state` (what they share);
- `agent_sim.link`: `HubLink`, what those parts need from a connection to a
  hub, and `Connector`, which opens one; `agent_sim.wslink` implements them
  over websockets;
- `agent_sim.job`: what handlers and fault policies see;
- `agent_sim.client`: `HubClient`, a client of `/v1/client`;
- `agent_sim.run`: `run_node`, a node's main loop with a graceful drain on SIGTERM;
- `agent_sim.behaviour`: pure, seeded capabilities, service times, faults;
- `agent_sim.fleet`: many simulated agents in one process;
- `agent_sim.cli`: the `agent-sim` command.
"""

from agent_sim.agent import JobContext, JobFailed, JobRejected, NodeAgent
from agent_sim.behaviour import Behaviour, FaultDecision, Profile, get_profile, node_capabilities
from agent_sim.client import ConnectionLost, HubClient
from agent_sim.fleet import Fleet
from agent_sim.run import run_node
from hub.core.messages import Capabilities, LanguagePair, Pipeline

__all__ = [
    "Behaviour",
    "Capabilities",
    "ConnectionLost",
    "FaultDecision",
    "Fleet",
    "HubClient",
    "JobContext",
    "JobFailed",
    "JobRejected",
    "LanguagePair",
    "NodeAgent",
    "Pipeline",
    "Profile",
    "get_profile",
    "node_capabilities",
    "run_node",
]

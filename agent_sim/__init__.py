"""Node-side code: the `NodeAgent` SDK, a small hub client, seeded simulated behaviour and fleets.

What a node author needs is importable from here: `NodeAgent` and what its
handler sees (`JobContext`, `JobFailed`, `JobRejected`), `run_node` (serve until
SIGTERM, then drain), the capability model it advertises (`Capabilities`,
`LanguagePair`, `Pipeline`, re-exported from `hub.core.messages`) and
`HubClient` to submit jobs (its futures fail with `ConnectionLost` when the
connection drops unanswered) and to open live speech sessions (`LiveSession`,
its events `UtteranceCut`, `Partial`, `UtteranceResult`, `SessionClosed`, and
`SessionError`; a node gets each utterance as `JobContext.utterance`, an
`Utterance`). The guide is docs/sdk.md; examples/ has nodes and clients.

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
- `agent_sim.live`: `LiveSession`, a client's live speech session (send audio,
  iterate over cuts, partials and results; resumed after a dropped connection);
- `agent_sim.run`: `run_node`, a node's main loop with a graceful drain on SIGTERM;
- `agent_sim.behaviour`: pure, seeded capabilities, service times, faults;
- `agent_sim.fleet`: many simulated agents in one process;
- `agent_sim.cli`: the `agent-sim` command.
"""

from agent_sim.agent import JobContext, JobFailed, JobRejected, NodeAgent, Utterance
from agent_sim.behaviour import Behaviour, FaultDecision, Profile, get_profile, node_capabilities
from agent_sim.client import ConnectionLost, HubClient
from agent_sim.fleet import Fleet
from agent_sim.live import LiveEvent, LiveSession, SessionError
from agent_sim.run import run_node
from hub.core.messages import (
    AudioFormat,
    Capabilities,
    LanguagePair,
    Partial,
    Pipeline,
    RoomJoined,
    RoomResult,
    SessionClosed,
    UtteranceCut,
    UtteranceResult,
)

__all__ = [
    "AudioFormat",
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
    "LiveEvent",
    "LiveSession",
    "NodeAgent",
    "Partial",
    "Pipeline",
    "Profile",
    "RoomJoined",
    "RoomResult",
    "SessionClosed",
    "SessionError",
    "Utterance",
    "UtteranceCut",
    "UtteranceResult",
    "get_profile",
    "node_capabilities",
    "run_node",
]

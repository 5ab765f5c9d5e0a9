"""The dispatch benchmark's printed tables."""

from __future__ import annotations

from typing import Any

from _summary import SCRIPT_ONLY_COMMANDS
from _topology import CROSS_HUB_IDS


def print_table(out: dict[str, Any]) -> None:
    def ok(flag: bool) -> str:
        return "met" if flag else "MISSED"

    print()
    print(f"dispatch benchmark, mode {out['mode']}, {out['machine']['cpus']} CPUs "
          f"(shared, noisy: medians of {out['settings']['rounds']} rounds)")
    if "redis_ops_per_job" in out:
        _print_cross(out)
    elif "rtt_p50_us" in out:
        s = out["settings"]
        print(f"RTT: 1 in flight, {s['rtt_jobs']} jobs; throughput: {s['in_flight']} in flight, "
              f"{s['tp_jobs']} jobs; {s['nodes']} nodes x {s['max_concurrency']} slots")
        print(f"{'':<18}{'hub':>12}{'floor':>12}{'hub/floor':>12}  target")
        print(f"{'rtt p50 (us)':<18}{out['rtt_p50_us']:>12.0f}{out['floor_rtt_p50_us']:>12.0f}"
              f"{out['rtt_p50_ratio']:>12.2f}  <= 1.25x "
              f"{ok(out['targets']['rtt_p50_ratio<=1.25'])}")
        print(f"{'rtt p99 (us)':<18}{out['rtt_p99_us']:>12.0f}{out['floor_rtt_p99_us']:>12.0f}"
              f"{out['rtt_p99_ratio']:>12.2f}  <= 1.5x  "
              f"{ok(out['targets']['rtt_p99_ratio<=1.5'])}")
        print(f"{'jobs/s':<18}{out['jobs_per_s']:>12.0f}{out['floor_jobs_per_s']:>12.0f}"
              f"{out['throughput_ratio']:>12.2f}  >= 0.6x  "
              f"{ok(out['targets']['throughput_ratio>=0.6'])}")
        if "cpu_us_per_job" in out and "floor_cpu_us_per_job" in out:
            print(f"{'CPU us/job':<18}{out['cpu_us_per_job']:>12.1f}"
                  f"{out['floor_cpu_us_per_job']:>12.1f}"
                  f"{out['cpu_us_per_job'] / out['floor_cpu_us_per_job']:>12.2f}  "
                  "(the server's, throughput phase)")
        if "peers_cpu_us_per_job" in out and "floor_peers_cpu_us_per_job" in out:
            print(f"{'peers CPU us/job':<18}{out['peers_cpu_us_per_job']:>12.1f}"
                  f"{out['floor_peers_cpu_us_per_job']:>12.1f}"
                  f"{out['peers_cpu_us_per_job'] / out['floor_peers_cpu_us_per_job']:>12.2f}  "
                  "(load generator + nodes, same CPUs)")
        if "cpu_us_per_job_rtt" in out and "floor_cpu_us_per_job_rtt" in out:
            print(f"{'CPU us/job, RTT':<18}{out['cpu_us_per_job_rtt']:>12.1f}"
                  f"{out['floor_cpu_us_per_job_rtt']:>12.1f}"
                  f"{out['cpu_us_per_job_rtt'] / out['floor_cpu_us_per_job_rtt']:>12.2f}  "
                  "(1 in flight)")
    if "auth" in out:
        _print_auth(out)
    if out.get("memory"):
        print(f"{'idle nodes':>10}{'RSS before':>14}{'RSS after':>14}{'KB/node':>10}"
              f"{'connect s':>11}")
        for m in out["memory"]:
            print(f"{m['nodes']:>10}{m['rss_before_kb']:>11} KB{m['rss_after_kb']:>11} KB"
                  f"{m['kb_per_node']:>10.1f}{m['connect_seconds']:>11.1f}")
        if "kb_per_node_at_10000<=30" in out.get("targets", {}):
            print(f"memory per idle node at 10,000 nodes <= 30 KB: "
                  f"{ok(out['targets']['kb_per_node_at_10000<=30'])}")


def _print_cross(out: dict[str, Any]) -> None:
    def ok(flag: bool) -> str:
        return "met" if flag else "MISSED"

    s = out["settings"]
    t = out["targets"]
    print(f"RTT: 1 in flight, {s['rtt_jobs']} jobs; throughput: {s['in_flight']} in flight, "
          f"{s['tp_jobs']} jobs; {s['nodes']} nodes x {s['max_concurrency']} slots")
    print(f"cross: client on hub {CROSS_HUB_IDS[0]}, nodes on hub {CROSS_HUB_IDS[1]}, one "
          f"Redis; local: one hub; floor: raw relay")
    print(f"{'':<16}{'cross':>10}{'local':>10}{'floor':>10}{'cross-local':>13}"
          f"{'cross/floor':>13}  target")
    hop = out["two_hop_p50_us"]
    print(f"{'rtt p50 (us)':<16}{out['rtt_p50_us']:>10.0f}{out['local_rtt_p50_us']:>10.0f}"
          f"{out['floor_rtt_p50_us']:>10.0f}{out['cross_minus_local_rtt_p50_us']:>+13.0f}"
          f"{out['rtt_p50_ratio']:>13.2f}  <= local + 2 x {hop:.0f} us = "
          f"{out['cross_rtt_p50_limit_us']:.0f} us  {ok(t['cross_rtt_p50<=local+2x_two_hop'])}")
    print(f"{'rtt p99 (us)':<16}{out['rtt_p99_us']:>10.0f}{out['local_rtt_p99_us']:>10.0f}"
          f"{out['floor_rtt_p99_us']:>10.0f}{out['cross_minus_local_rtt_p99_us']:>+13.0f}"
          f"{out['rtt_p99_ratio']:>13.2f}")
    print(f"{'jobs/s':<16}{out['jobs_per_s']:>10.0f}{out['local_jobs_per_s']:>10.0f}"
          f"{out['floor_jobs_per_s']:>10.0f}{out['cross_local_throughput_ratio']:>12.2f}x"
          f"{out['throughput_ratio']:>13.2f}  >= 0.35x floor  "
          f"{ok(t['throughput_ratio>=0.35'])}")
    if "cpu_us_per_job" in out:
        line = f"{'CPU us/job':<16}{out['cpu_us_per_job']:>10.1f}"
        line += f"{out['local_cpu_us_per_job']:>10.1f}" if "local_cpu_us_per_job" in out else ""
        line += f"{out['floor_cpu_us_per_job']:>10.1f}" if "floor_cpu_us_per_job" in out else ""
        print(line + "  (the servers', throughput phase; cross: both hubs)")
    print(f"two Redis Streams hops alone (redis_hop.py, this Redis, same rounds): p50 "
          f"{hop:.0f} us, p99 {out['two_hop_p99_us']:.0f} us; cross - local = "
          f"{out['cross_minus_local_rtt_p50_in_two_hops']:.2f} x the two hops")
    print()
    print(f"Redis commands per job (INFO commandstats; idle baseline of "
          f"{out['redis_idle_ops_per_s']:.1f} ops/s subtracted; counts include the")
    print("commands Lua scripts run, e.g. SEND_MANY's XADD and PEXPIRE, besides EVALSHA)")
    print(f"{'':<28}{'throughput':>12}{'rtt':>10}")
    print(f"{'total':<28}{out['redis_ops_per_job']:>12.3f}{out['redis_ops_per_job_rtt']:>10.3f}")
    print(f"{'  sent by the hubs':<28}{out['redis_commands_sent_per_job']:>12.3f}"
          f"{out['redis_commands_sent_per_job_rtt']:>10.3f}")
    print(f"{'  raw (no baseline)':<28}{out['redis_ops_per_job_raw']:>12.3f}")
    tp_cmds = out["redis_ops_per_job_by_command"]
    rtt_cmds = out["redis_ops_per_job_rtt_by_command"]
    shown = [n for n in set(tp_cmds) | set(rtt_cmds)
             if max(tp_cmds.get(n, 0.0), rtt_cmds.get(n, 0.0)) >= 0.0005]
    for name in sorted(shown, key=lambda n: (-tp_cmds.get(n, 0.0), n)):
        tag = " (in scripts)" if name in SCRIPT_ONLY_COMMANDS else ""
        print(f"{name + tag:<28}{tp_cmds.get(name, 0.0):>12.3f}{rtt_cmds.get(name, 0.0):>10.3f}")
    problems = out.get("hub_log_problems") or {}
    for name, found in problems.items():
        print(f"hub {name}: {found['lines']} warning/error log lines, e.g. {found['sample'][0]}")
    if not problems:
        print("hub logs: no warnings or errors")


def _print_auth(out: dict[str, Any]) -> None:
    """The plain hub, JWT, and JWT + TLS of the same rounds."""
    def ok(flag: bool) -> str:
        return "met" if flag else "MISSED"

    auth = out["auth"]
    base = auth["baseline"]
    print()
    print(f"authentication (same rounds; {out['settings']['handshakes']} handshakes per "
          f"measurement, one at a time)")
    print(f"{'':<22}{'plain':>10}{'jwt':>10}{'jwt+tls':>10}{'jwt/plain':>11}{'tls/plain':>11}")
    rows = [("rtt p50 (us)", "rtt_p50_us", "rtt_p50_ratio"),
            ("rtt p99 (us)", "rtt_p99_us", "rtt_p99_ratio"),
            ("jobs/s", "jobs_per_s", "throughput_ratio")]
    if "handshake_p50_us" in auth[base]:
        rows.append(("handshake p50 (us)", "handshake_p50_us", ""))
        rows.append(("handshake mean (us)", "handshake_mean_us", ""))
    plain, jwt, tls = auth[base], auth["jwt"], auth["tls"]
    for label, key, ratio in rows:
        line = f"{label:<22}{plain[key]:>10.0f}{jwt[key]:>10.0f}{tls[key]:>10.0f}"
        if ratio:
            line += f"{jwt[ratio]:>11.2f}{tls[ratio]:>11.2f}"
        else:  # handshakes: the extra microseconds
            line += f"{jwt[key] - plain[key]:>+11.0f}{tls[key] - plain[key]:>+11.0f}"
        print(line)
    t = auth["targets"]
    print(f"jwt per-job cost within 10% of plain: rtt p50 {ok(t['jwt_rtt_p50_within_10%'])}, "
          f"jobs/s {ok(t['jwt_jobs_per_s_within_10%'])} (noisy on a shared box: compare runs)")
    problems = out.get("hub_log_problems") or {}
    for name, found in problems.items():
        print(f"hub {name}: {found['lines']} warning/error log lines, e.g. {found['sample'][0]}")

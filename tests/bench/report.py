#!/usr/bin/env python3
"""Turns the measurements of tests/bench/run.sh (results.jsonl) into results.json,
results.md (tables with ratios to the best peer and to the throughput bound) and
bench.png (matplotlib)."""
import argparse
import datetime
import json
import os
import platform

PEERS = ["stunnel", "haproxy", "nginx"]
ORDER = ["podmesh", "podmesh_classical", "stunnel", "haproxy", "nginx", "null", "direct"]
LABEL = {"podmesh": "podmesh", "podmesh_classical": "podmesh --key-exchange classical", "stunnel": "stunnel4", "haproxy": "haproxy", "nginx": "nginx stream (TLS)",
         "null": "nginx stream, no TLS (null pair)", "direct": "direct plaintext"}


def load(path):
    pairs, common = {}, {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            (common if r["pair"] == "all" else pairs.setdefault(r["pair"], {}))[r["key"]] = r["value"]
    return pairs, common


def figures(p):
    """The flat figures of one pair (None where not measured)."""
    rate, conn, hold, idle, tls, conn_r, tls_r = (
        p.get(k) or {} for k in ("rate", "connect", "hold", "idle", "tls", "connect_resume", "tls_resume"))
    resumed = bool(tls.get("resumed"))
    held = hold.get("held") or 0
    per_conn = {}
    for side in ("server", "client"):
        if held:
            per_conn[side] = (hold[f"after_{side}_kib"] - hold[f"before_{side}_kib"]) / held
    neg = tls.get("negotiated") or {}
    return {
        "gbit": p.get("gbit"),
        "rps": rate.get("rps"), "p50_us": rate.get("p50_us"), "p99_us": rate.get("p99_us"),
        "rate_errors": rate.get("errors"),
        # A proxy that resumed on its "full handshake" listener has no full-handshake figure.
        "conn_per_s": None if resumed else conn.get("conn_per_s"), "conn_errors": conn.get("errors"),
        "conn_resumed_per_s": conn.get("conn_per_s") if resumed else conn_r.get("conn_per_s"),
        "resume_seen": f'{tls_r.get("resumed", 0)}/{tls_r.get("handshakes", 0)}' if tls_r else None,
        "idle_server_mib": idle.get("server_kib", 0) / 1024 if idle.get("server_kib") else None,
        "idle_client_mib": idle.get("client_kib", 0) / 1024 if idle.get("client_kib") else None,
        "anon_server_mib": idle["server_anon_kib"] / 1024 if idle.get("server_anon_kib") else None,
        "anon_client_mib": idle["client_anon_kib"] / 1024 if idle.get("client_anon_kib") else None,
        "held": held or None,
        "kib_per_conn_server": per_conn.get("server"), "kib_per_conn_client": per_conn.get("client"),
        "tls": ", ".join(sorted(neg)) if neg else None,
        "tls_resumed": tls.get("resumed"), "tls_handshakes": tls.get("handshakes"),
        "echo_ok": (p.get("echo") or {}).get("ok", False),
        "half_close_ok": (p.get("half_close") or {}).get("ok"),
    }


def fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def best(fig, key, lower_is_better=False):
    vals = [(fig[p][key], p) for p in PEERS if p in fig and fig[p].get(key) is not None]
    if not vals:
        return None, None
    return (min if lower_is_better else max)(vals)


def worst_side(f, key):
    vals = [f.get(f"{key}_server"), f.get(f"{key}_client")]
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--in", dest="inp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--load", default="")
    a = ap.parse_args()

    pairs, common = load(a.inp)
    fig = {name: figures(p) for name, p in pairs.items()}
    aes = (common.get("aead") or {}).get("gbit")
    aes128 = ((common.get("aead") or {}).get("aes128") or {}).get("gbit")
    null = (fig.get("null") or {}).get("gbit")
    bound = 1 / (1 / null + 1 / aes) if aes and null else None
    bound128 = 1 / (1 / null + 1 / aes128) if aes128 and null else None
    for f in fig.values():
        # Each TLS pair against the bound of the cipher it negotiated (the peers: AES-256-GCM).
        b = bound128 if f["tls"] and "AES_128" in f["tls"] and bound128 else bound
        f["bound_gbit"] = b
        f["x_bound"] = f["gbit"] / b if b and f.get("gbit") else None
        f["idle_mib"] = max(v for v in (f["idle_server_mib"], f["idle_client_mib"], 0) if v is not None) or None
        f["kib_per_conn"] = worst_side(f, "kib_per_conn")
        f["anon_mib"] = max((v for v in (f["anon_server_mib"], f["anon_client_mib"]) if v is not None), default=None)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = [f"# podmesh proxy benchmark ({a.mode} run, {now})", "",
          f"Host: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}, load average at the end: {a.load}.",
          "All TLS pairs: same certificates (ECDSA P-384 CA, P-256 mesh certificates, chain = leaf + intermediate), "
          "TLS 1.3 only, mutual authentication, no session resumption. Negotiated parameters read off the wire "
          "(ServerHello on the veth).", ""]
    if aes:
        md.append(f"AES-256-GCM on one core, 16 KiB records: rustls/aws-lc-rs seal {common['aead']['seal_gbit']:.1f}, "
                  f"open {common['aead']['open_gbit']:.1f} Gbit/s (harmonic mean {aes:.1f})"
                  + (f"; OpenSSL `speed` {float(common['openssl_aes_gbit']):.1f} Gbit/s" if common.get("openssl_aes_gbit") else "")
                  + ".")
    if bound:
        md.append(f"Throughput bound of a TLS pair on this host = 1/(1/null pair + 1/AES-GCM per core) = "
                  f"1/(1/{null:.2f} + 1/{aes:.2f}) = **{bound:.2f} Gbit/s** with AES-256-GCM"
                  + (f" ({bound128:.2f} Gbit/s with AES-128-GCM at {aes128:.1f} Gbit/s per core; "
                     "each pair's × bound uses the cipher it negotiated)" if bound128 else "") + ".")
    md += ["", "| pair | negotiated | throughput Gbit/s | × bound | req/s | p50 µs | p99 µs | new conn/s full handshake "
           "| new conn/s resumed "
           "| idle RSS MiB (client / server) | of which anon MiB | KiB per idle conn (client / server) "
           "| byte-exact / half-close |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ORDER:
        if name not in fig:
            continue
        f = fig[name]
        tls = f["tls"] or ("plaintext" if name in ("null", "direct") else "–")
        if f.get("tls_resumed"):
            tls += f" ({f['tls_resumed']}/{f['tls_handshakes']} resumed)"
        rss = "–" if name == "direct" else f"{fmt(f['idle_client_mib'], 1)} / {fmt(f['idle_server_mib'], 1)}"
        anon = "–" if name == "direct" else f"{fmt(f['anon_client_mib'], 1)} / {fmt(f['anon_server_mib'], 1)}"
        kib = "–" if name == "direct" else f"{fmt(f['kib_per_conn_client'], 1)} / {fmt(f['kib_per_conn_server'], 1)}"
        md.append(f"| {LABEL[name]} | {tls} | {fmt(f['gbit'])} | {fmt(f['x_bound'])} | {fmt(f['rps'], 0)} "
                  f"| {fmt(f['p50_us'])} | {fmt(f['p99_us'])} | {fmt(f['conn_per_s'], 0)} "
                  f"| {fmt(f['conn_resumed_per_s'], 0)}{' (' + f['resume_seen'] + ' resumed)' if f['resume_seen'] else ''} "
                  f"| {rss} | {anon} | {kib} "
                  f"| {'yes' if f['echo_ok'] else '**NO**'} / "
                  f"{ {True: 'yes', False: '**NO**', None: '–'}[f['half_close_ok']] } |")

    pm = fig.get("podmesh")
    checks = []
    if pm:
        md += ["", "## podmesh against the best peer (stunnel4, haproxy, nginx)", "",
               "| figure | podmesh | best peer | ratio | target | met |", "|---|---|---|---|---|---|"]
        rows = [("throughput Gbit/s", "gbit", False, lambda r: r >= 1.3, "≥ 1.3× best peer"),
                ("throughput × bound", "x_bound", False, lambda r: None, "≥ 0.9 of the bound (absolute)"),
                ("p99 latency µs at fixed rate", "p99_us", True, lambda r: r <= 0.7, "≤ 0.7× best peer"),
                ("new connections/s, full mTLS handshake", "conn_per_s", False, lambda r: r >= 1.0, "≥ best peer"),
                ("new connections/s, resumed sessions", "conn_resumed_per_s", False, lambda r: r >= 1.0, "≥ best peer"),
                ("idle RSS MiB (larger side)", "idle_mib", True, lambda r: None, "≤ 8 MiB (absolute)"),
                ("idle anon (private) MiB (larger side)", "anon_mib", True, lambda r: None, "(information)"),
                ("KiB per idle connection (larger side)", "kib_per_conn", True, lambda r: None, "≤ 20 KiB (absolute)")]
        absolute = {"x_bound": lambda v: v >= 0.9, "idle_mib": lambda v: v <= 8, "kib_per_conn": lambda v: v <= 20}
        for title, key, lower, rel_ok, target in rows:
            bv, bp = best(fig, key, lower)
            v = pm.get(key)
            ratio = v / bv if v is not None and bv else None
            ok = absolute[key](v) if key in absolute and v is not None else (rel_ok(ratio) if ratio is not None else None)
            checks.append({"figure": key, "podmesh": v, "best_peer": bp, "best_value": bv, "ratio": ratio, "met": ok})
            md.append(f"| {title} | {fmt(v)} | {fmt(bv)} ({bp or '–'}) | {fmt(ratio)} | {target} "
                      f"| {'yes' if ok else ('no' if ok is not None else '–')} |")
        pc = fig.get("podmesh_classical")
        if pc:
            md += ["", "## podmesh: hybrid post-quantum key exchange (default) against classical", "",
                   "| figure | hybrid (X25519MLKEM768) | classical (X25519) | hybrid / classical |", "|---|---|---|---|"]
            for title, key in [("new connections/s, full mTLS handshake", "conn_per_s"),
                               ("new connections/s, resumed sessions", "conn_resumed_per_s"),
                               ("throughput Gbit/s", "gbit")]:
                h, c = pm.get(key), pc.get(key)
                md.append(f"| {title} | {fmt(h)} | {fmt(c)} | {fmt(h / c if h is not None and c else None)} |")
        d = fig.get("direct", {}).get("gbit")
        if d and pm.get("gbit"):
            md.append(f"\npodmesh throughput is {100 * pm['gbit'] / d:.0f} % of direct plaintext "
                      f"(issue target ≥ 50 %, out of reach on this host: the TLS-free null pair reaches "
                      f"{100 * null / d:.0f} %)." if null else "")
    md += ["", "Method: `tests/bench/run.sh`, see tests/bench/README.md. Throughput: iperf3, one "
           "stream, best of the runs. req/s, p50, p99: `pmbench rate`, open-loop HTTP/1.1 keep-alive at a fixed rate "
           "(latency from the scheduled send time when the connection was still busy, no coordinated omission). "
           "New conn/s: `pmbench connect`, one new TCP connection and one request per iteration through the pair, "
           "so each costs an mTLS handshake between the proxies: 'full' through client listeners without session "
           "resumption, 'resumed' through a listener that resumes (TLS 1.3 PSK + ECDHE, no certificates); podmesh "
           "runs a second client proxy with `--tls-resumption on` for the resumed figure. RSS: VmRSS of each proxy process and its "
           "children (VmRSS, which includes file-backed pages such as the binary's text and shared libraries; "
           "'anon' = RssAnon, the private part), idle right after start; per connection = (RSS with N idle keep-alive connections − RSS before) / N."]
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"mode": a.mode, "time": now, "aes_gcm_gbit_per_core": aes, "bound_gbit": bound,
                   "pairs": fig, "podmesh_vs_best_peer": checks, "raw": {"pairs": pairs, "common": common}}, f, indent=1)
    chart(fig, bound, null, os.path.join(a.out, "bench.png"))


def chart(fig, bound, null, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ORDER if n in fig]
    colors = ["#d62728" if n == "podmesh" else "#7f7f7f" if n in ("null", "direct") else "#1f77b4" for n in names]
    panels = [("throughput (Gbit/s, higher is better)", "gbit", names),
              ("p99 latency at fixed rate (µs, lower is better)", "p99_us", names),
              ("new mTLS connections/s (higher is better)", "conn_per_s", names),
              ("KiB per idle connection, larger side (lower is better)", "kib_per_conn",
               [n for n in names if n != "direct"])]
    f, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (title, key, ns) in zip(axes.flat, panels):
        vals = [fig[n].get(key) or 0 for n in ns]
        ax.bar(range(len(ns)), vals, color=[colors[names.index(n)] for n in ns])
        ax.set_xticks(range(len(ns)))
        ax.set_xticklabels(ns, rotation=20)
        ax.set_title(title, fontsize=10)
        for i, v in enumerate(vals):
            ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=8)
        if key == "gbit" and bound:
            ax.axhline(bound, color="#2ca02c", linestyle="--", linewidth=1)
            ax.annotate(f"TLS bound {bound:.2f}", (-0.4, bound), ha="left", va="bottom",
                        fontsize=8, color="#2ca02c")
    f.suptitle("podmesh vs stunnel4 / haproxy / nginx stream — same host, same run, same certificates, TLS 1.3 mTLS")
    f.tight_layout()
    f.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

"""The KV proxy: a small asyncio service that performs wide fan-outs for executors.

An executor hands it a value, the fan-in counters to bump and prebuilt invocation payloads; the
proxy stores, bumps and invokes in parallel. ``python -m wukong.proxy`` runs it (proxy_ec2/).
"""

"""The e2e tier: servers (guard serve, guard proxy, vllm serve) as processes, PostgreSQL, the benchmark suites end to end."""

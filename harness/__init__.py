"""What the benchmarks and the tests both drive the project with, from the outside: server processes
(`processes`), a deliberately misbehaving OpenAI-compatible upstream (`fake_upstream`) and the tiny
random Llama that trains and serves in seconds on a CPU (`tiny_model`). It imports none of the
project's packages: the benchmarks and the tests sit above it, the code under test beside it."""

"""The OpenAI protocol edge: what a request may say (validated before anything runs), what an answer
looks like, whole or streamed, errors in OpenAI's shape, and the shapes read from an upstream. The
only part of the server that tells chat from text completions."""

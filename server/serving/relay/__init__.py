"""`guard proxy` at the bias and filter levels: the request relayed, the answer through the output filter."""

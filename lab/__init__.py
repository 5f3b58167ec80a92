"""What the proof, the bench and the audit share: the two trees in one
environment (trees), engine settings (engine), model building and digests
(model), ways to stream a checkpoint and watch the stream (streams), the tiny
checkpoints (checkpoints), and what every proof run must show (expectations).
It needs only tools/; nothing in tools/ needs it."""

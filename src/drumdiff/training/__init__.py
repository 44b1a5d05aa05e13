"""Training: turn a prepared dataset into a model file.

    config      TrainConfig (every hyper-parameter), sizes
    stream      the data stream: stream positions -> clips, noise, t, guidance dropout (exact resume)
    step        the one training step (autocast -> loss -> scaler/backward -> clip -> AdamW -> EMA), EMA,
                the fixed-noise validation loss
    checkpoint  the resumable checkpoint (write, read, its path) and export to a model file (no Lightning)
    memory      --memory-budget: probe real steps, choose batch, precision and checkpointing
    module      the Lightning module and progress bar (imports Lightning)
    run         `drumdiff train`: plan the run (fresh, resume, init-from), build it, run it

Only `module` and `run` import Lightning; export, the memory probe and the benchmarks do not.
Determinism, the design in one paragraph: every example the run ever sees has a *stream position* p
(0, 1, 2, ... across steps, ranks and micro-batches). The clip at p is `perm(epoch)[p % N]` with a
permutation seeded by (seed, epoch), and its noise, its t and its guidance dropout come from a generator
seeded by (seed, p). So the data order and all training randomness are pure functions of the step: a resumed
run (weights, EMA, optimizer and step restored) continues bit-exactly on CPU, and `--devices 2 --batch-size B`
sees exactly the examples, noise and t of one process at batch 2B.
"""

"""Several gateway processes on one config behind one address (`simgate serve --workers N`).

`supervisor` is the parent (starts, restarts and stops the replicas); `plan` is what a replica is told;
`sessions` tags each session id with the replica that holds it; `forward` sends a request that landed
on the wrong replica to the right one.
"""

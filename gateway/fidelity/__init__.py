"""`simgate fidelity calls`: simulate recorded live calls and score them against what really answered."""

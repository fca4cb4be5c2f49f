"""`simgate export ...`: recorded data in the formats other tools train on."""

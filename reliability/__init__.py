"""How each stack behaves when things go wrong: bad input, faults under load, rollouts, soak."""

"""Robot integrations: the MuJoCo cloth simulator, preference data, candidate samplers and the action selector."""

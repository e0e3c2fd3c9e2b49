"""Servers and clients: rewards behind HTTP endpoints.

``reward_server``: ``mmreward serve``, any reward on LitServe (``/score``, ``/rank``, ``/health``);
``client``: ``RewardClient``/``AsyncRewardClient``, a served reward as a reward again;
``openai_server``: a generative judge behind an OpenAI-compatible chat endpoint.
"""

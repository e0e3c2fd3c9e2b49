"""The published reward models of ``mmreward.hub``: their modules and key-layout converters.

``clip``: PickScore, HPSv2/HPSv2.1, CLIPScore (open_clip towers, a cosine-based score).
``aesthetic``: the LAION improved aesthetic predictor (an MLP on CLIP ViT-L/14 image embeddings).
``imagereward``: ImageReward (BLIP image-grounded text encoder + MLP, z-scored).
``hpsv3``: HPSv3 (Qwen2-VL-7B read at a ``<|Reward|>`` token, an MLP to mu and log-sigma).
"""

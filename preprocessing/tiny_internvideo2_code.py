"""Remote code of the *tiny* InternVideo2-like checkpoint that ``make_tiny_encoder`` writes.

It is copied verbatim into the model directory as ``modeling_tiny_internvideo2.py`` and loaded
by ``AutoModel.from_pretrained(dir, trust_remote_code=True)``, exactly like the real stage-2
checkpoints' code. It mirrors their public surface only (``get_vid_feat``, ``get_txt_feat``,
``tokenizer``, ``config.num_frames / size_t / max_txt_l / device``), not their architecture:
a 3-D patch embedding averaged over space-time for video, a bag of word embeddings for text.
"""
import torch
from torch import nn
from transformers import BertTokenizer, PretrainedConfig, PreTrainedModel


class TinyInternVideo2Config(PretrainedConfig):
    model_type = "tiny_internvideo2"

    def __init__(self, num_frames=4, size_t=32, max_txt_l=16, embed_dim=16, width=24, patch=8,
                 vocab_size=64, device="cpu", **kwargs):
        super().__init__(**kwargs)
        self.num_frames, self.size_t, self.max_txt_l = num_frames, size_t, max_txt_l
        self.embed_dim, self.width, self.patch, self.vocab_size = embed_dim, width, patch, vocab_size
        self.device = device


class TinyInternVideo2Stage2(PreTrainedModel):
    config_class = TinyInternVideo2Config

    def __init__(self, config):
        super().__init__(config)
        self.patch_embed = nn.Conv3d(3, config.width, (1, config.patch, config.patch), (1, config.patch, config.patch))
        self.vision_proj = nn.Linear(config.width, config.embed_dim)
        self.word_embed = nn.Embedding(config.vocab_size, config.width)
        self.text_proj = nn.Linear(config.width, config.embed_dim)
        self.tokenizer = BertTokenizer.from_pretrained(config.name_or_path) if config.name_or_path else None
        self.post_init()

    def encode_vision(self, frames):
        """frames [B, T, C, H, W] -> pooled [B, width]"""
        x = self.patch_embed(frames.permute(0, 2, 1, 3, 4).to(self.dtype))
        return x.flatten(2).mean(-1)

    def get_vid_feat(self, frames):
        with torch.no_grad():
            vfeat = self.vision_proj(self.encode_vision(frames))
            return vfeat / vfeat.norm(dim=-1, keepdim=True)

    def get_txt_feat(self, text):
        with torch.no_grad():
            tok = self.tokenizer(text, padding="max_length", truncation=True, max_length=self.config.max_txt_l,
                                 return_tensors="pt").to(self.config.device)
            mask = tok.attention_mask.unsqueeze(-1).to(self.dtype)
            pooled = (self.word_embed(tok.input_ids) * mask).sum(1) / mask.sum(1)
            tfeat = self.text_proj(pooled)
            return tfeat / tfeat.norm(dim=-1, keepdim=True)

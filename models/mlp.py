"""A residual MLP score network for low-dimensional data, x of shape (B, d)."""

from __future__ import annotations

from torch import Tensor, nn

from score_sde.models.embeddings import LabelEmbedding, batch_time, check_labels, time_features


class ResidualMLPBlock(nn.Module):
    """h + W2 drop(act(W1 act(norm(h)) + E act(emb))): a pre-norm residual block fed the embedding.

    Args:
        hidden: the width of h.
        dropout: dropout probability before the second layer.
    """

    def __init__(self, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.lin1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(hidden, hidden)
        self.lin2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        """h (B, hidden), emb (B, hidden) -> (B, hidden)."""
        z = self.lin1(self.act(self.norm(h))) + self.emb(self.act(emb))
        return h + self.lin2(self.drop(self.act(z)))


class MLP(nn.Module):
    """Residual MLP s(x, t, y) for data of shape (B, dim), conditioned on time (and a label).

    x -> Linear -> depth x ResidualMLPBlock(time [+ label] embedding) -> LayerNorm, SiLU, Linear
    (zero-initialised, so an untrained network outputs 0: eps = 0 or score = 0).

    Args:
        dim: the data dimension d.
        hidden: the width of the residual stream.
        depth: the number of residual blocks (>= 1).
        embed_dim: the size of the time features (even).
        time_embedding: "fourier" (Gaussian random Fourier features) or "sinusoidal".
        num_classes: if given, condition on labels y in [0, num_classes); y = num_classes or
            y=None is the unconditional (null) label.
        fourier_scale: the std of the Fourier frequencies (per unit of t).
        dropout: dropout probability inside the residual blocks.
    """

    def __init__(self, dim: int, *, hidden: int = 256, depth: int = 3, embed_dim: int = 128,
                 time_embedding: str = "fourier", num_classes: int | None = None,
                 fourier_scale: float = 16.0, dropout: float = 0.0):
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.dim = dim
        self.time_embed = nn.Sequential(
            time_features(time_embedding, embed_dim, fourier_scale=fourier_scale),
            nn.Linear(embed_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label_embed = None if num_classes is None else LabelEmbedding(num_classes, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResidualMLPBlock(hidden, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @property
    def num_classes(self) -> int | None:
        return None if self.label_embed is None else self.label_embed.num_classes

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        """The raw network output.

        Args:
            x: (B, dim) noisy data x_t.
            t: (B,) times in [0, T], as is (or a float for the whole batch).
            y: (B,) integer labels in [0, num_classes] (num_classes = null), or None.

        Returns:
            (B, dim).
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, dim) = (B, {self.dim}), got {tuple(x.shape)}")
        check_labels(y, self.label_embed)
        emb = self.time_embed(batch_time(t, x))
        if self.label_embed is not None:
            emb = emb + self.label_embed(y, x.shape[0], x.device)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)

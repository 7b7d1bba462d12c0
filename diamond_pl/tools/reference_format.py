"""The published DIAMOND agent state dict: key mapping to DiamondAgent and architecture inference from shapes.

A reference agent file (`checkpoints/agent_versions/agent_epoch_XXXXX.pt`, or a released `<Game>.pt`) is a flat
state dict with keys `denoiser.*`, `rew_end_model.*` and `actor_critic.*`. Below those prefixes the keys equal ours
(nets/ was built that way), so conversion only moves prefixes:

    denoiser.X       -> denoiser.denoiser.X       (DenoiserModule.denoiser is the EDM wrapper; its F is inner_model)
    rew_end_model.X  -> rew_end_model.net.X
    actor_critic.X   -> actor_critic.net.X

The file holds no config, so every size is read from tensor shapes (`infer_architecture`). What shapes cannot tell:
  * frames are square (the LSTM input sizes give an area, not height and width);
  * the actor-critic's frame side is the reward/end model's (both see the env's frames); it decides whether the last
    encoder stage pools, which leaves no parameter behind;
  * sigma_data, offset noise, the sampler and every training setting are not weights: they keep diamond_pl's
    defaults, which are DIAMOND's Atari values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from torch import Tensor

from diamond_pl.errors import ConfigError
from diamond_pl.nets.actor_critic_net import ActorCriticNetConfig
from diamond_pl.nets.denoiser_net import DenoiserNetConfig
from diamond_pl.nets.rew_end_net import NUM_END_CLASSES, NUM_REW_CLASSES, RewEndNetConfig

FORMAT = "diamond-agent-state-dict"  # recorded in converted checkpoints as their source format

# reference component prefix -> DiamondAgent prefix
PREFIXES: dict[str, str] = {
    "denoiser.": "denoiser.denoiser.",
    "rew_end_model.": "rew_end_model.net.",
    "actor_critic.": "actor_critic.net.",
}

FIX_FILE = (
    "pass the agent state dict the reference saves (checkpoints/agent_versions/agent_epoch_XXXXX.pt or a released "
    "<Game>.pt), unmodified"
)


class CheckpointError(ConfigError):
    """A checkpoint that cannot be read, converted or loaded; the message says which file, what and how to fix it."""


@dataclass
class ReferenceArchitecture:
    num_actions: int
    denoiser: DenoiserNetConfig
    rew_end_model: RewEndNetConfig
    actor_critic: ActorCriticNetConfig


# --- key mapping ------------------------------------------------------------------------------------------------------


def is_reference_state_dict(obj: object) -> bool:
    """A flat dict of tensors whose keys all start with one of the three component prefixes."""
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
        and all(k.startswith(tuple(PREFIXES)) for k in obj)
    )


def to_agent_key(key: str) -> str:
    for ref, ours in PREFIXES.items():
        if key.startswith(ref):
            return ours + key[len(ref) :]
    raise KeyError(key)


def to_reference_key(key: str) -> str | None:
    """Inverse of `to_agent_key`; None for an agent key outside the three networks."""
    for ref, ours in PREFIXES.items():
        if key.startswith(ours):
            return ref + key[len(ours) :]
    return None


def check_components(state_dict: dict, source: str) -> None:
    """Every key belongs to one of the three components, and all three are present."""
    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointError(f"{source}: expected a non-empty state dict (a dict of tensors); {FIX_FILE}")
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{source}: not a state dict: {some_keys(not_tensors)} are not tensors (is it a full training state rather "
            f"than the agent's weights?); {FIX_FILE}"
        )
    unknown = [k for k in state_dict if not str(k).startswith(tuple(PREFIXES))]
    if unknown:
        raise CheckpointError(
            f"{source}: unknown keys {some_keys(unknown)}: a DIAMOND agent state dict has only keys starting with "
            f"{', '.join(PREFIXES)}; {FIX_FILE}"
        )
    missing = [p[:-1] for p in PREFIXES if not any(k.startswith(p) for k in state_dict)]
    if missing:
        raise CheckpointError(
            f"{source}: the component(s) {missing} are missing (no '{missing[0]}.*' keys); diamond_pl imports whole "
            f"agents only (denoiser, rew_end_model and actor_critic): {FIX_FILE}"
        )


# --- architecture inference -------------------------------------------------------------------------------------------


def infer_architecture(state_dict: dict[str, Tensor], source: str = "state dict") -> ReferenceArchitecture:
    """Every network size, from the tensor shapes of a reference agent state dict (see the module docstring)."""
    check_components(state_dict, source)
    shapes = _Shapes(state_dict, source)
    denoiser = _infer_denoiser(shapes)
    rew_end = _infer_rew_end(shapes)
    actor_critic = _infer_actor_critic(shapes, img_size=rew_end.img_size)
    counts = {"denoiser": denoiser.num_actions, "rew_end_model": rew_end.num_actions,
              "actor_critic": actor_critic.num_actions}  # fmt: skip
    if len(set(counts.values())) != 1:
        raise CheckpointError(f"{source}: the components disagree on the number of actions {counts}; {FIX_FILE}")
    return ReferenceArchitecture(denoiser.num_actions, denoiser, rew_end, actor_critic)


class _Shapes:
    """Shape look-ups that fail with a message naming the file and the key."""

    def __init__(self, state_dict: dict[str, Tensor], source: str) -> None:
        self.sd, self.source = state_dict, source

    def __call__(self, key: str, ndim: int) -> tuple[int, ...]:
        if key not in self.sd:
            raise CheckpointError(f"{self.source}: missing key {key!r}, needed to infer the architecture; {FIX_FILE}")
        shape = tuple(self.sd[key].shape)
        if len(shape) != ndim:
            raise CheckpointError(
                f"{self.source}: {key!r} has shape {list(shape)}, expected {ndim} dimensions; {FIX_FILE}"
            )
        return shape

    def has(self, key: str) -> bool:
        return key in self.sd

    def indices(self, prefix: str) -> list[int]:
        """The i of keys `<prefix><i>.*`, which must run 0..n-1."""
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        found = sorted({int(m.group(1)) for k in self.sd if (m := pattern.match(k))})
        if found != list(range(len(found))):
            raise CheckpointError(f"{self.source}: keys {prefix}<i>.* have indices {found}, expected 0..n-1; {FIX_FILE}")
        return found

    def error(self, message: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: {message}; {FIX_FILE}")


def _levels(shapes: _Shapes, prefix: str, num_levels: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(depths, channels, attn_depths) of `num_levels` levels `<prefix><i>.resblocks.<j>` (ResBlocks)."""
    depths, channels, attn = [], [], []
    for i in range(num_levels):
        depth = len(shapes.indices(f"{prefix}{i}.resblocks."))
        if depth == 0:
            raise shapes.error(f"level {i} ({prefix}{i}) has no ResBlocks")
        depths.append(depth)
        channels.append(shapes(f"{prefix}{i}.resblocks.0.conv1.weight", 4)[0])
        attn.append(int(shapes.has(f"{prefix}{i}.resblocks.0.attn.qkv_proj.weight")))
    return tuple(depths), tuple(channels), tuple(attn)


def _infer_denoiser(shapes: _Shapes) -> DenoiserNetConfig:
    p = "denoiser.inner_model."
    num_actions, emb_dim = shapes(p + "act_emb.0.weight", 2)
    cond_channels = shapes(p + "cond_proj.0.weight", 2)[0]
    if cond_channels % emb_dim:
        raise shapes.error(f"cond_channels {cond_channels} is not a multiple of the action embedding size {emb_dim}")
    n = cond_channels // emb_dim  # the n action embeddings are concatenated to the noise embedding's size
    img_channels = shapes(p + "conv_out.weight", 4)[0]
    num_levels = len(shapes.indices(p + "unet.d_blocks."))
    if num_levels == 0:
        raise shapes.error(f"no U-Net levels ({p}unet.d_blocks.<i>.*)")
    depths, channels, attn = _levels(shapes, p + "unet.d_blocks.", num_levels)
    return DenoiserNetConfig(
        num_actions=num_actions, img_channels=img_channels, num_steps_conditioning=n, cond_channels=cond_channels,
        depths=depths, channels=channels, attn_depths=attn,
    )  # fmt: skip


def _infer_rew_end(shapes: _Shapes) -> RewEndNetConfig:
    p = "rew_end_model."
    num_actions, cond_channels = shapes(p + "act_emb.weight", 2)
    in_channels = shapes(p + "encoder.conv_in.weight", 4)[1]
    if in_channels % 2:
        raise shapes.error(f"the reward/end encoder takes {in_channels} channels, expected 2 * image channels")
    num_levels = len(shapes.indices(p + "encoder.blocks.")) - 1  # the last entry is the middle stage
    if num_levels < 1:
        raise shapes.error(f"no reward/end encoder stages ({p}encoder.blocks.<i>.*)")
    depths, channels, attn = _levels(shapes, p + "encoder.blocks.", num_levels)
    lstm_dim = shapes(p + "lstm.weight_hh_l0", 2)[1]
    # the encoder halves the frame side num_levels - 1 times and the LSTM sees the flattened feature map
    side = _square_side(shapes, p + "lstm.weight_ih_l0", channels[-1])
    head_out = shapes(p + "head.2.weight", 2)[0]
    if head_out != NUM_REW_CLASSES + NUM_END_CLASSES:
        raise shapes.error(f"the reward/end head has {head_out} outputs, expected {NUM_REW_CLASSES + NUM_END_CLASSES}")
    return RewEndNetConfig(
        num_actions=num_actions, img_channels=in_channels // 2, lstm_dim=lstm_dim, cond_channels=cond_channels,
        depths=depths, channels=channels, attn_depths=attn, img_size=side * 2 ** (num_levels - 1),
    )  # fmt: skip


def _infer_actor_critic(shapes: _Shapes, img_size: int) -> ActorCriticNetConfig:
    p = "actor_critic."
    enc = p + "encoder.encoder."
    # nn.Sequential: conv, then per stage a SmallResBlock (params .f.*) and, where the stage pools, a MaxPool2d
    # (no params): the index gap between consecutive blocks says whether the earlier one pools
    pattern = re.compile(re.escape(enc) + r"(\d+)\.f\.")
    blocks = sorted({int(m.group(1)) for k in shapes.sd if (m := pattern.match(k))})
    img_channels = shapes(enc + "0.weight", 4)[1]
    if not blocks or blocks[0] != 1:
        raise shapes.error(f"the actor-critic encoder's first block should be {enc}1.*, found blocks at {blocks}")
    channels = tuple(shapes(f"{enc}{k}.f.2.weight", 4)[0] for k in blocks)
    gaps = [b - a - 1 for a, b in zip(blocks, blocks[1:])]
    if any(g not in (0, 1) for g in gaps):
        raise shapes.error(f"unexpected actor-critic encoder layout (blocks at indices {blocks})")
    # the last stage's pooling is whatever brings the frame side down to the LSTM's input side
    side = _square_side(shapes, p + "lstm.weight_ih", channels[-1])
    pools = math.log2(img_size / side) if img_size % side == 0 else -1
    last = pools - sum(gaps)
    if last not in (0, 1):
        raise shapes.error(
            f"the actor-critic LSTM sees {side}x{side} feature maps, which {img_size}x{img_size} frames (the reward/end "
            f"model's) and the pooling after its first {len(gaps)} stage(s) {gaps} cannot produce"
        )
    return ActorCriticNetConfig(
        num_actions=shapes(p + "actor_linear.weight", 2)[0], img_channels=img_channels,
        lstm_dim=shapes(p + "lstm.weight_hh", 2)[1], channels=channels, down=(*gaps, int(last)), img_size=img_size,
    )  # fmt: skip


def _square_side(shapes: _Shapes, lstm_key: str, channels: int) -> int:
    """Side of the square feature map (channels, side, side) that an LSTM input of this size flattens."""
    features = shapes(lstm_key, 2)[1]
    side = math.isqrt(features // channels) if features % channels == 0 else 0
    if side == 0 or channels * side * side != features:
        raise shapes.error(f"{lstm_key!r} takes {features} inputs, not {channels} channels times a square feature map")
    return side


def some_keys(keys: list, limit: int = 8, quote: bool = True) -> str:
    """At most `limit` keys (or already formatted items, quote=False), and how many more."""
    shown = ", ".join(repr(k) if quote else str(k) for k in keys[:limit])
    return f"[{shown}{f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''}]"

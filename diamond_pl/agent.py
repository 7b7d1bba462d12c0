"""DiamondAgent: the composite LightningModule that trains DIAMOND's three components (reference spec §9).

It holds `denoiser` (DenoiserModule), `rew_end_model` (RewEndModule) and `actor_critic` (ActorCriticModule), each
with its own AdamW, warm-up schedule and gradient clipping, and optimises them manually: the train iterable yields one
batch per optimiser step tagged with the component it is for (`data/schedule.py`), and `training_step` dispatches it.
The actor-critic's "batch" is a marker: its data is an imagined rollout through `WorldModelEnv`, built from the
denoiser's sampler, the reward/end model and real contexts from the train store.

Hyperparameters are saved as plain dicts (`hparams`), so checkpoints load with `weights_only=True` and
`DiamondAgent.load_from_checkpoint` rebuilds the same architecture.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import lightning as L
import torch
from torch import Tensor

from diamond_pl.config_dicts import from_dict
from diamond_pl.diffusion.edm import DiffusionConfig
from diamond_pl.diffusion.sampler import SamplerConfig
from diamond_pl.envs.base import PixelEnv
from diamond_pl.envs.env_loop import TorchRealEnv
from diamond_pl.envs.spec import EnvSpec
from diamond_pl.envs.world_model_env import WorldModelEnv, WorldModelEnvConfig
from diamond_pl.modules.actor_critic import ActorCriticLossConfig, ActorCriticModule, actor_critic_optim
from diamond_pl.modules.component import COMPONENTS, Component
from diamond_pl.modules.denoiser import DenoiserModule, denoiser_optim
from diamond_pl.modules.optim import OptimConfig
from diamond_pl.modules.rew_end import RewEndModule, rew_end_optim
from diamond_pl.nets.actor_critic_net import ActorCriticNetConfig
from diamond_pl.nets.denoiser_net import DenoiserNetConfig
from diamond_pl.nets.rew_end_net import RewEndNetConfig
from diamond_pl.perf import (
    FastPathConfig, applied_fast_paths, apply_fast_paths, as_fast_path_config, imagination_fns, release_host_memory,
)



def _with_env(cfg, env: EnvSpec, what: str):
    """The network config with the env's action count and frame size (a config that names other values is refused)."""
    values = {"num_actions": env.num_actions}
    if hasattr(cfg, "img_size"):
        values["img_size"] = env.img_size
    for key, want in values.items():
        given, default = getattr(cfg, key), type(cfg).__dataclass_fields__[key].default
        if given not in (None, default, want):
            raise ValueError(
                f"model.{what}.{key} = {given} but {env.name} has {want}; remove {key} from the config "
                f"(it follows the env: data.game / data.env_id, data.img_size)"
            )
    return replace(cfg, **values)


class DiamondAgent(L.LightningModule):
    def __init__(
        self,
        env: dict | None = None,
        denoiser: DenoiserNetConfig = DenoiserNetConfig(),
        diffusion: DiffusionConfig = DiffusionConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        denoiser_optim: OptimConfig = denoiser_optim(),
        rew_end_model: RewEndNetConfig = RewEndNetConfig(),
        rew_end_model_optim: OptimConfig = rew_end_optim(),
        actor_critic: ActorCriticNetConfig = ActorCriticNetConfig(),
        actor_critic_loss: ActorCriticLossConfig = ActorCriticLossConfig(),
        actor_critic_optim: OptimConfig = actor_critic_optim(),
        world_model_env: WorldModelEnvConfig = WorldModelEnvConfig(),
        wm_metric_horizon: int = 15,
        model_free: bool = False,
        fast: FastPathConfig = FastPathConfig(),
        game: str | None = None,
    ) -> None:
        """
        Args:
            env: the real env (`EnvSpec` fields; set from the `data` section by the CLI): its action count and frame
                size set every network's.
            denoiser: the denoiser network (paper: cond 256, channels [64]*4, depths [2]*4, no level attention).
            diffusion: the denoiser's noise model (paper: sigma_data 0.5, offset noise 0.3, training ln sigma ~
                N(-0.4, 1.2^2) clipped to [0.002, 20]).
            sampler: next-frame sampler used in imagination (paper: 3 Euler steps, sigma 0.002..5, rho 7).
            rew_end_model: the reward/end network (paper: LSTM 512, cond 128, channels [32]*4).
            actor_critic: the actor-critic network (paper: LSTM 512, channels [32, 32, 64, 64]).
            actor_critic_loss: gamma 0.985, lambda 0.95, entropy weight 0.001, 15-step chunks, temperature 1.
            world_model_env: 32 imagined envs, horizon 15, 256 preloaded context batches.
            *_optim: AdamW lr 1e-4, eps 1e-8, warm-up 100 steps; weight decay 0.01 / 0.01 / 0;
                gradient clipping 1 / 100 / 100.
            wm_metric_horizon: autoregressive steps of the world-model PSNR/SSIM test metric.
            model_free: train the actor-critic on `world_model_env.num_envs` real train envs instead of imagination,
                without world-model training or data collection (spec §9.5; not a 100k-step setting).
            fast: speed-ups that do not change results beyond float noise (diamond_pl/perf/, docs/performance.md):
                compile, channels_last, CPU threads, TF32, fused AdamW, CUDA graphs / bf16 for imagination.
            game: checkpoints written before `env` existed name only their Atari game.
        """
        super().__init__()
        self.automatic_optimization = False
        self.env_spec = EnvSpec.from_dict(env if env is not None else {"game": game or "Breakout"})
        denoiser = _with_env(from_dict(DenoiserNetConfig, denoiser), self.env_spec, "denoiser")
        rew_end_model = _with_env(from_dict(RewEndNetConfig, rew_end_model), self.env_spec, "rew_end_model")
        actor_critic = _with_env(from_dict(ActorCriticNetConfig, actor_critic), self.env_spec, "actor_critic")
        sampler, world_model_env = from_dict(SamplerConfig, sampler), from_dict(WorldModelEnvConfig, world_model_env)
        diffusion = from_dict(DiffusionConfig, diffusion)
        actor_critic_loss = from_dict(ActorCriticLossConfig, actor_critic_loss)
        given_optims = (denoiser_optim, rew_end_model_optim, actor_critic_optim)
        optims = {c: from_dict(OptimConfig, o) for c, o in zip(COMPONENTS, given_optims)}
        if actor_critic_loss.backup_every < 1 or world_model_env.horizon < 1:
            raise ValueError("actor_critic_loss.backup_every and world_model_env.horizon must be >= 1")

        # plain dicts only: checkpoints must load with weights_only=True
        self.save_hyperparameters(
            {
                "env": self.env_spec.to_dict(),
                "denoiser": asdict(denoiser),
                "diffusion": asdict(diffusion),
                "sampler": asdict(sampler),
                "denoiser_optim": asdict(optims["denoiser"]),
                "rew_end_model": asdict(rew_end_model),
                "rew_end_model_optim": asdict(optims["rew_end_model"]),
                "actor_critic": asdict(actor_critic),
                "actor_critic_loss": asdict(actor_critic_loss),
                "actor_critic_optim": asdict(optims["actor_critic"]),
                "world_model_env": asdict(world_model_env),
                "wm_metric_horizon": wm_metric_horizon,
                "model_free": model_free,
                "fast": asdict(as_fast_path_config(fast)),
            }
        )
        self.denoiser = DenoiserModule(denoiser, sampler, optims["denoiser"], diffusion, wm_metric_horizon)
        self.rew_end_model = RewEndModule(rew_end_model, optims["rew_end_model"])
        self.actor_critic = ActorCriticModule(actor_critic, actor_critic_loss, optims["actor_critic"])
        self.world_model_env_cfg = world_model_env
        self.model_free = model_free
        self.fast_cfg = as_fast_path_config(fast)
        self._imagination_fns = None
        self.env_loop = None  # imagination, built at the first actor-critic step of each epoch
        self._real_envs: PixelEnv | None = None  # model-free mode's train envs
        self._grad_norms: dict[str, Tensor] = {}
        self._last_component: str | None = None

    @property
    def num_actions(self) -> int:
        return self.env_spec.num_actions

    @property
    def game(self) -> str:
        """The env's name: the Atari game, or the gymnasium id."""
        return self.env_spec.name

    @property
    def components(self) -> dict[str, Component]:
        """The three components by name, in training (and optimiser) order."""
        return {name: getattr(self, name) for name in COMPONENTS}

    def setup(self, stage: str) -> None:
        # before configure_optimizers (fused AdamW) and before the strategy moves the model to its device
        device = self.trainer.strategy.root_device if getattr(self, "_trainer", None) is not None else self.device
        apply_fast_paths(self, self.fast_cfg, device=device)

    # --- optimisation -------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizers, schedulers = [], []
        for module in self.components.values():
            cfg = module.configure_optimizers()
            optimizers.append(cfg["optimizer"])
            schedulers.append(cfg["lr_scheduler"])
        return optimizers, schedulers

    def _optimizer_and_scheduler(self, component: str):
        i = COMPONENTS.index(component)
        opts, scheds = self.optimizers(), self.lr_schedulers()
        return opts[i], scheds[i]

    def training_step(self, batch: tuple[str, Any], batch_idx: int) -> None:
        component, data = batch
        module = self.components[component]
        if component != self._last_component:
            self._on_component_switch(component)
        if data is None:  # the actor-critic's batch is not data but the env loop it acts in (imagination)
            data = self.imagination()
        loss, metrics = module.loss(data)

        opt, sched = self._optimizer_and_scheduler(component)
        lr = opt.param_groups[0]["lr"]  # the lr this step uses (0 at the very first step, as the reference)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()  # clipping happens in on_before_optimizer_step, after AMP unscaling
        sched.step()

        metrics = {f"{component}/train/{k}": v for k, v in metrics.items()}
        metrics[f"{component}/train/grad_norm_before_clip"] = self._grad_norms.pop(component)
        metrics[f"{component}/train/lr"] = lr
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)

    def _on_component_switch(self, component: str) -> None:
        # With host malloc tuning the heap never shrinks by itself, so it would hold the largest component's
        # high-water mark (the reward/end backward pass: ~12 GB at batch 32) through the others; trimming once per
        # block of updates gives it back and costs one update's page faults (measured in docs/performance.md).
        if self._last_component is not None and (applied_fast_paths(self) or {}).get("host_malloc_tuning"):
            release_host_memory()
        self._last_component = component

    def on_before_optimizer_step(self, optimizer) -> None:
        i = [o.optimizer if hasattr(o, "optimizer") else o for o in self.trainer.optimizers].index(optimizer)
        component = COMPONENTS[i]
        module = self.components[component]
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), module.optim_cfg.max_grad_norm)
        self._grad_norms[component] = norm.detach()

    def on_train_epoch_start(self) -> None:
        # a fresh imagination each epoch: contexts from the data collected so far, burnt in with the current
        # reward/end model; and a checkpoint at an epoch boundary then holds everything needed to resume exactly
        self.env_loop = None

    def teardown(self, stage: str) -> None:
        if self._real_envs is not None:
            self._real_envs.close()
            self._real_envs = None

    def real_env_steps(self, collected: int) -> int:
        """Real train-env steps of the run: the `collected` ones, plus in model-free mode those the actor-critic took
        to train (each update rolls num_envs real envs backup_every steps on every device; the lr schedule counts
        the updates)."""
        if not self.model_free:
            return collected
        i = COMPONENTS.index("actor_critic")
        # resuming a finished run writes results at on_fit_start, before Lightning restores the schedulers
        loaded = self.trainer._checkpoint_connector._loaded_checkpoint
        updates = loaded["lr_schedulers"][i]["last_epoch"] if loaded else self.lr_schedulers()[i].last_epoch
        steps_per_update = self.world_model_env_cfg.num_envs * self.actor_critic.loss_cfg.backup_every
        return collected + updates * steps_per_update * self.trainer.world_size

    def on_train_epoch_end(self) -> None:
        if self.model_free:  # no reward/end model training, so no metrics (torchmetrics warns on an empty compute)
            return
        metrics = self.rew_end_model.classification_metrics("train")
        self.log_dict({f"rew_end_model/train/{k}": v for k, v in metrics.items()}, batch_size=1)

    # --- imagination --------------------------------------------------------------------------------------------
    def imagination(self):
        """The env loop the actor-critic trains in: imagination, or real envs in model-free mode."""
        if self.model_free:
            if self.env_loop is None:
                if self._real_envs is None:  # loading 32 ROMs takes seconds: once per run, reset each epoch
                    self._real_envs = self.env_spec.make(self.world_model_env_cfg.num_envs, train=True)
                self.env_loop = self.actor_critic.make_env_loop(TorchRealEnv(self._real_envs, self.device))
            return self.env_loop
        if self.env_loop is None:
            dm = self.trainer.datamodule
            n = self.denoiser.num_steps_conditioning
            if self._imagination_fns is None:  # built once: CUDA-graph wrappers hold their captured graphs
                self._imagination_fns = imagination_fns(self, self.fast_cfg)
            next_obs_fn, rew_end_fn = self._imagination_fns
            env = WorldModelEnv(
                next_obs_fn=next_obs_fn,
                rew_end_fn=rew_end_fn,
                sample_contexts=dm.sampler("world_model_contexts", n).sample,
                cfg=self.world_model_env_cfg,
                device=self.device,
            )
            self.env_loop = self.actor_critic.make_env_loop(env)
        self.env_loop.env.ensure_contexts(self.actor_critic.loss_cfg.backup_every)
        return self.env_loop

"""Fine-tuning pretrained ResNets: strategies, the BatchNorm policy, data-driven defaults.

    from reslab.config import load_config
    from reslab.finetune import finetune
    cfg = load_config(None, {"data.source": "my_images/", "finetune.pretrained": "reslab:resnet20_fashion_mnist"})
    result = finetune(cfg)   # prints the plan and why, then trains through reslab.engine.fit
    result.plan.batch_size, result.plan.reasons   # the plan it followed

- ``strategies``: which groups train (``linear``, ``full``, ``gradual``, ``discriminative``)
  and their learning-rate scales, via ``model.module_groups()``;
- ``bn``: ``apply_bn_policy(model, "train" | "frozen" | "eval")``;
- ``plan``: ``plan_finetune`` (a pure function: data and weights facts -> ``FinetunePlan``,
  strategy, BN policy, lr, batch size, step clip, each with its reason); ``choose_plan``
  (its core: strategy, BN policy and lr from the images per class);
- ``features`` / ``cached``: the ``linear`` strategy on cached features;
- ``unfreeze``: the ``Unfreezer`` callback (gradual unfreezing, checkpointed);
- ``step_clip``: the ``StepClip`` callback (per-filter step bound that keeps SGD on an
  unnormalised, frozen-BatchNorm backbone from running away);
- ``run``: ``finetune(cfg)`` (plans, then executes the plan) and ``prepare_model``.

Names are imported lazily (PEP 562) so ``import reslab.finetune`` does no work.
"""

from __future__ import annotations

from reslab._lazy import lazy_exports

_EXPORTS = {
    "finetune": "run",
    "FinetuneResult": "run",
    "prepare_model": "run",
    "apply_bn_policy": "bn",
    "FixedStatsBatchNorm2d": "bn",
    "BN_POLICIES": "bn",
    "STRATEGIES": "strategies",
    "build_param_groups": "strategies",
    "lr_scales": "strategies",
    "set_trainable": "strategies",
    "trainable_groups": "strategies",
    "choose_plan": "plan",
    "plan_finetune": "plan",
    "FinetunePlan": "plan",
    "DataFacts": "plan",
    "WeightsFacts": "plan",
    "extract_features": "features",
    "train_head": "features",
    "Unfreezer": "unfreeze",
    "StepClip": "step_clip",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

"""Fine-tuning a text-to-image model on a few pictures, by concept, in the formats diffusers loads.

- `sdlearn.finetune.textual_inversion`: one new word for a frozen model (Gal et al., 2023): a
  placeholder token, its row of the embedding table trained with the diffusion loss, saved as
  the `learned_embeds.safetensors` that `load_textual_inversion` reads
- `sdlearn.finetune.dreambooth`: the U-Net itself trained on one subject under a rare word
  (Ruiz et al., 2023), with prior preservation: the class pictures the frozen model drew,
  trained on in the same batch
- `sdlearn.finetune.lora`: the same training through low-rank adapters (Hu et al., 2022) from
  peft, saved with diffusers' LoRA serialisation for `load_lora_weights`
- `sdlearn.finetune.low_rank`: the same low-rank change for any model of our own, without adapters
  (the forward pass with W + B A); `sdlearn.weights` stores such a change as a model of its own
"""

from sdlearn.finetune.dreambooth import (check_instance_images, check_prior_loss_weight, class_images,
                                         dreambooth_loss, subject_copies)
from sdlearn.finetune.lora import (LORA_FILE, LORA_TARGETS, add_lora, check_lora_file, count_parameters, load_lora,
                                   lora_layers, lora_state_dict, merged_weight, read_lora_file, save_lora)
from sdlearn.finetune.low_rank import LowRankAdapted, low_rank_targets, merge_low_rank
from sdlearn.finetune.textual_inversion import (add_placeholder_token, check_learned_embeds, load_learned_embeds,
                                                restore_other_rows, save_learned_embeds, textual_inversion_loss,
                                                trainable_embeddings)

__all__ = ["LORA_FILE", "LORA_TARGETS", "LowRankAdapted", "low_rank_targets", "merge_low_rank", "add_lora", "add_placeholder_token", "check_instance_images",
           "check_learned_embeds", "check_lora_file", "check_prior_loss_weight", "class_images", "count_parameters",
           "dreambooth_loss", "load_learned_embeds", "load_lora", "lora_layers", "lora_state_dict", "merged_weight",
           "read_lora_file", "restore_other_rows", "save_learned_embeds", "save_lora", "subject_copies",
           "textual_inversion_loss", "trainable_embeddings"]

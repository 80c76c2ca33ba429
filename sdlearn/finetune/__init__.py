"""Fine-tuning a text-to-image model on a few pictures, by concept, in the formats diffusers loads.

- `sdlearn.finetune.textual_inversion`: one new word for a frozen model (Gal et al., 2022): a
  placeholder token, its row of the embedding table trained with the diffusion loss, saved as
  the `learned_embeds.safetensors` that `load_textual_inversion` reads
"""

from sdlearn.finetune.textual_inversion import (add_placeholder_token, check_learned_embeds, load_learned_embeds,
                                                restore_other_rows, save_learned_embeds, textual_inversion_loss,
                                                trainable_embeddings)

__all__ = ["add_placeholder_token", "check_learned_embeds", "load_learned_embeds", "restore_other_rows",
           "save_learned_embeds", "textual_inversion_loss", "trainable_embeddings"]

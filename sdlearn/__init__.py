"""sdlearn: the companion package of the course "Stable Diffusion from the magic function up".

The package is organised by concept, one module each; a lesson imports from several:

- `sdlearn.data`: datasets (scikit-learn digits, Fashion-MNIST), the diffusion models' 32x32
  form, class names, captions and the flips that go with them, loaders
- `sdlearn.plotting`: image grids, side-by-side comparisons, animations, U-Net diagrams
- `sdlearn.gradients`: finite differences, autograd gradients, gradient checks, gradient ascent
- `sdlearn.schedules`: noise schedules (betas, alpha-bar, sigmas), timestep spacing, adding noise
- `sdlearn.losses`: the diffusion, flow-matching, classification, VAE and contrastive (CLIP) losses, and an
  LPIPS-style perceptual distance
- `sdlearn.samplers`: DDPM, DDIM, Euler, Euler ancestral, Heun and LMS, as plain functions
- `sdlearn.flow`: flow matching: the straight path, the shifted times of SD3, Euler's method in flow time
- `sdlearn.optim`: SGD, momentum, RMSProp and Adam written out (each equal to torch.optim's), and a sampler
  driven by any of them
- `sdlearn.text_to_image`: the text-to-image loop of Stable Diffusion, step by step, and its parts
- `sdlearn.editing`: image to image (SDEdit) and inpainting, on the text-to-image loop
- `sdlearn.inversion`: DDIM inversion: DDIM run backwards up to a strength's first timestep, and denoising
  from given latents
- `sdlearn.masks`: inpainting masks: random training masks, boxes and halves, the latent-sized mask
- `sdlearn.guidance`: classifier-free guidance and negative prompts; guidance with any differentiable loss
- `sdlearn.conditioning`: class labels as conditioning: the embedding, the loss, sampling per class
- `sdlearn.attention_maps`: recording attention maps (cross, self or both) on sdlearn's models or diffusers'
- `sdlearn.tokenizer`: CLIP's tokenizer, offline
- `sdlearn.models`: the networks the lessons build and train (classifier, U-Net, attention,
  autoencoders, CLIP) and the conversion of the U-Net to and from diffusers
- `sdlearn.training`: one training loop (AdamW, EMA, mixed precision, checkpoints, Accelerate)
- `sdlearn.precision`: whether bf16 pays on this hardware
- `sdlearn.finetune`: teaching a trained model something new from a few pictures (textual inversion,
  DreamBooth, LoRA), saved in the formats diffusers loads; low-rank changes of our own models
- `sdlearn.recipes`: the settings behind every shipped model; `python -m sdlearn.train NAME` runs one
- `sdlearn.weights`: the registry of shipped models (weights files and pipeline folders)
- `sdlearn.pipelines`: text-to-image pipelines as diffusers folders, shipped or from the Hub
- `sdlearn.metrics`: judging generated images (classifier, Fréchet distance, realism), PSNR, SSIM, CLIP accuracy
- `sdlearn.exercises`: graded exercises and their checks
- `sdlearn.numerics`: the pinned CPU settings that make every lesson print the same numbers everywhere
- `sdlearn.utils`: device choice, seeding, atomic file writes, printing differences
"""

__version__ = "0.1.0"

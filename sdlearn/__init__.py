"""sdlearn: the companion package of the course "Stable Diffusion from the magic function up".

The package is organised by component; each lesson imports from several modules:

- `sdlearn.data`: datasets (scikit-learn digits, Fashion-MNIST), class names, captions, loaders
- `sdlearn.plotting`: image grids, side-by-side comparisons, animations
- `sdlearn.gradients`: finite differences, autograd gradients, gradient checks, gradient ascent
- `sdlearn.models`: the small networks the lessons train
- `sdlearn.exercises`: graded exercises and their checks
- `sdlearn.utils`: device choice, seeding, atomic file writes
"""

__version__ = "0.1.0"

"""flora_mm: FLoRA (low-rank Tucker adaptation) for OpenMMLab detection and segmentation backbones.

The pinned OpenMMLab stack (including mmcv built with compiled ops) is installed by ``tools/install.sh``
(``make test`` / ``make demo`` run it); ``pip install -e .`` alone installs only the package.
"""
from setuptools import find_packages, setup

setup(
    name='flora_mm',
    version='0.1.0',
    description='FLoRA: structure-preserving low-rank tensor adaptation for OpenMMLab backbones',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['flora_mm', 'flora_mm.*']),
    # our own pretrained weights (Apache-2.0; SHA-256 and regeneration commands in flora_mm/weights/__init__.py)
    package_data={'flora_mm.weights': ['*.pth', '*.json']},
    python_requires='>=3.10',
    install_requires=['torch>=2.1', 'mmengine>=0.10', 'timm>=1.0', 'numpy'],
)

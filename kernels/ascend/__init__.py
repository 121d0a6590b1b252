"""TileLang kernels written in the Ascend dialect (tilelang.ascend.language) for Huawei Ascend NPUs."""

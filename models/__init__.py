"""Score networks (MLP, U-Net), the prediction parameterisation (eps / score / x0 / v) and EMA."""

"""Linear algebra on Hessian-vector products; knows nothing about SAM or sharpness."""

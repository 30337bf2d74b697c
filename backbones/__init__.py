"""Model code ComfyUI lacks: DynamiCrafter UNet + Resampler, its BaseModel, checkpoint reading."""

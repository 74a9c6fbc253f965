from .cgr_head import CGRSegHead

__all__ = ['CGRSegHead']

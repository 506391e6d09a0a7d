from tests.scoring.conftest import model_dir, photos

__all__ = ["model_dir", "photos"]

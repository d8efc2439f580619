"""Word lists of the simulated world: category tree, attribute values, places.

Everything here is plain data. The simulator draws from these lists with a
seeded generator, so the text of a world is a pure function of its config.
English by default; every list is free text, so a Chinese lexicon with the
same shape would work unchanged.
"""

from __future__ import annotations

# L1 -> L2 -> L3 (product type words). The L3 word is the item's "entity".
CATEGORY_TREE: dict[str, dict[str, tuple[str, ...]]] = {
  "clothing": {
    "tops": ("t-shirt", "shirt", "hoodie", "sweater", "blouse"),
    "bottoms": ("jeans", "shorts", "skirt", "leggings", "trousers"),
    "outerwear": ("jacket", "coat", "vest", "windbreaker"),
    "dresses": ("dress", "jumpsuit", "pajamas"),
  },
  "shoes": {
    "sports shoes": ("sneakers", "running shoes", "basketball shoes"),
    "casual shoes": ("loafers", "sandals", "slippers", "canvas shoes"),
    "boots": ("boots", "ankle boots", "rain boots"),
  },
  "bags": {
    "handbags": ("handbag", "tote bag", "crossbody bag", "clutch"),
    "travel": ("backpack", "suitcase", "duffel bag"),
    "small goods": ("wallet", "belt", "card holder"),
  },
  "beauty": {
    "skincare": ("face cream", "serum", "cleanser", "toner", "sunscreen"),
    "makeup": ("lipstick", "foundation", "mascara", "eyeshadow"),
    "hair care": ("shampoo", "conditioner", "hair oil"),
  },
  "home": {
    "bedding": ("pillow", "duvet", "bed sheet", "blanket"),
    "furniture": ("chair", "table", "bookshelf", "sofa", "dresser"),
    "decor": ("rug", "curtains", "wall art", "lamp", "mirror"),
  },
  "kitchen": {
    "cookware": ("frying pan", "wok", "pot", "knife set"),
    "appliances": ("air fryer", "rice cooker", "blender", "kettle"),
    "tableware": ("mug", "plate", "water bottle", "lunch box"),
  },
  "electronics": {
    "phones": ("phone", "phone case", "charger", "power bank"),
    "audio": ("earbuds", "headphones", "speaker"),
    "computers": ("laptop", "keyboard", "mouse", "monitor"),
    "wearables": ("smart watch", "fitness tracker"),
  },
  "food": {
    "snacks": ("cookies", "chips", "nuts", "chocolate"),
    "drinks": ("tea", "coffee", "juice", "milk"),
    "staples": ("rice", "noodles", "olive oil"),
  },
  "sports": {
    "fitness": ("yoga mat", "dumbbells", "resistance bands", "jump rope"),
    "outdoor": ("tent", "sleeping bag", "hiking backpack"),
    "ball sports": ("basketball", "football", "badminton racket"),
  },
  "toys": {
    "building": ("building blocks", "puzzle"),
    "dolls": ("doll", "plush toy", "action figure"),
    "educational": ("board game", "science kit", "drawing set"),
  },
  "pets": {
    "pet food": ("dog food", "cat food", "pet treats"),
    "pet supplies": ("cat litter", "pet bed", "dog leash", "cat toy"),
  },
  "baby": {
    "diapering": ("diapers", "baby wipes"),
    "feeding": ("baby bottle", "formula", "high chair"),
    "baby gear": ("stroller", "baby carrier", "crib"),
  },
}

# Base list price (currency units) of an L1; an item's price scatters around it.
BASE_PRICE: dict[str, float] = {
  "clothing": 35.0,
  "shoes": 60.0,
  "bags": 45.0,
  "beauty": 22.0,
  "home": 55.0,
  "kitchen": 30.0,
  "electronics": 90.0,
  "food": 9.0,
  "sports": 30.0,
  "toys": 20.0,
  "pets": 18.0,
  "baby": 25.0,
}

# Consumables: users buy them again (repeat-purchase sessions).
CONSUMABLE_L1 = frozenset({"beauty", "food", "pets", "baby"})

# Other names people type for an L3 (synonym queries).
SYNONYMS: dict[str, tuple[str, ...]] = {
  "t-shirt": ("tee", "tshirt"),
  "hoodie": ("sweatshirt",),
  "sweater": ("jumper", "pullover"),
  "trousers": ("pants",),
  "sneakers": ("trainers",),
  "running shoes": ("runners",),
  "sandals": ("flip flops",),
  "handbag": ("purse",),
  "suitcase": ("luggage",),
  "face cream": ("moisturizer",),
  "sofa": ("couch",),
  "rug": ("carpet",),
  "curtains": ("drapes",),
  "frying pan": ("skillet",),
  "mug": ("cup",),
  "phone": ("smartphone", "cellphone"),
  "earbuds": ("earphones",),
  "power bank": ("portable charger",),
  "laptop": ("notebook computer",),
  "smart watch": ("smartwatch",),
  "cookies": ("biscuits",),
  "chips": ("crisps",),
  "football": ("soccer ball",),
  "plush toy": ("stuffed animal",),
  "diapers": ("nappies",),
  "stroller": ("pram",),
  "dog leash": ("dog lead",),
}

COLORS = (
  "black",
  "white",
  "red",
  "blue",
  "pink",
  "grey",
  "green",
  "beige",
  "navy",
  "brown",
  "yellow",
  "purple",
)

# Attribute values that depend on the L1 (family-specific vocabularies).
MATERIALS: dict[str, tuple[str, ...]] = {
  "clothing": ("cotton", "linen", "silk", "wool", "denim", "polyester"),
  "shoes": ("leather", "canvas", "mesh", "suede"),
  "bags": ("leather", "nylon", "canvas", "pu leather"),
  "home": ("wood", "metal", "velvet", "cotton", "bamboo"),
  "kitchen": ("stainless steel", "ceramic", "glass", "cast iron", "silicone"),
  "electronics": ("aluminum", "plastic", "silicone"),
  "sports": ("nylon", "rubber", "foam", "tpe"),
  "toys": ("plastic", "wooden", "plush"),
  "pets": ("cotton", "rubber", "nylon"),
  "baby": ("cotton", "silicone", "bamboo"),
}
FUNCTIONS: dict[str, tuple[str, ...]] = {
  "clothing": ("breathable", "quick dry", "warm"),
  "shoes": ("non-slip", "breathable", "waterproof", "shock absorbing"),
  "bags": ("waterproof", "anti-theft", "large capacity"),
  "beauty": ("moisturizing", "anti-aging", "oil control", "brightening"),
  "home": ("foldable", "washable", "blackout"),
  "kitchen": ("non-stick", "dishwasher safe", "insulated"),
  "electronics": ("wireless", "fast charging", "noise cancelling", "waterproof"),
  "food": ("sugar free", "organic", "high protein"),
  "sports": ("non-slip", "adjustable", "quick dry"),
  "toys": ("educational", "glow in the dark"),
  "pets": ("chew resistant", "grain free", "odor control"),
  "baby": ("hypoallergenic", "leak proof", "bpa free"),
}
SPECIFICATIONS: dict[str, tuple[str, ...]] = {
  "clothing": ("size s", "size m", "size l", "size xl", "size xxl"),
  "shoes": ("size 37", "size 38", "size 39", "size 40", "size 42", "size 44"),
  "bags": ("20 inch", "24 inch", "15 inch"),
  "beauty": ("30ml", "50ml", "100ml", "200ml"),
  "home": ("120cm", "150cm", "180cm", "queen size", "king size"),
  "kitchen": ("24cm", "28cm", "1.5l", "2l", "500ml"),
  "electronics": ("64gb", "128gb", "256gb", "10000mah", "65w"),
  "food": ("250g", "500g", "1kg", "12 pack", "24 pack"),
  "sports": ("6mm", "10mm", "5kg", "10kg"),
  "toys": ("500 pieces", "1000 pieces", "3+ years"),
  "pets": ("2kg", "5kg", "10kg"),
  "baby": ("size 1", "size 2", "size 3", "80 count"),
}
STYLES = (
  "casual",
  "vintage",
  "minimalist",
  "korean style",
  "sporty",
  "elegant",
  "streetwear",
  "boho",
  "classic",
  "cute",
)
AUDIENCES = ("women", "men", "kids", "girls", "boys", "unisex", "teens", "elderly")
SCENES = ("office", "outdoor", "party", "travel", "gym", "home", "school", "camping")
SEASONS = ("spring", "summer", "autumn", "winter", "all season")
PATTERNS = ("striped", "plaid", "floral", "solid", "polka dot", "printed", "leopard")
MODIFIERS = (
  "large",
  "small",
  "portable",
  "thick",
  "oversized",
  "slim fit",
  "high waist",
  "lightweight",
  "mini",
  "long",
)
LOCATIONS = ("imported", "japanese", "korean", "italian", "german", "local")
SERIES = ("pro", "air", "max", "lite", "ultra", "mini", "plus", "classic")
MARKETING = (
  "new arrival",
  "hot sale",
  "free shipping",
  "limited edition",
  "best seller",
  "2025 new",
  "clearance",
  "gift box",
)
ANCHORS = ("lily's pick", "chef wang's choice", "mia live", "tom's deals", "jenny live")
PRICE_WORDS = {"low": "affordable", "high": "premium"}

# Which attribute types an L1's titles may carry (beyond entity/brand/marketing/
# series/anchor/price, which every family may carry).
ATTRIBUTES_BY_L1: dict[str, tuple[str, ...]] = {
  "clothing": (
    "color",
    "material",
    "style",
    "audience",
    "season",
    "pattern",
    "specifications",
    "modifier",
    "function",
    "scene",
  ),
  "shoes": (
    "color",
    "material",
    "style",
    "audience",
    "season",
    "specifications",
    "function",
    "scene",
    "model",
  ),
  "bags": (
    "color",
    "material",
    "style",
    "audience",
    "pattern",
    "specifications",
    "function",
    "scene",
    "modifier",
  ),
  "beauty": ("function", "specifications", "location", "audience", "season"),
  "home": (
    "color",
    "material",
    "style",
    "pattern",
    "specifications",
    "function",
    "modifier",
    "scene",
  ),
  "kitchen": (
    "color",
    "material",
    "specifications",
    "function",
    "modifier",
    "location",
    "model",
  ),
  "electronics": ("color", "material", "specifications", "function", "model", "scene"),
  "food": ("specifications", "function", "location", "modifier"),
  "sports": (
    "color",
    "material",
    "specifications",
    "function",
    "scene",
    "audience",
    "modifier",
  ),
  "toys": ("material", "specifications", "function", "audience", "modifier"),
  "pets": ("material", "specifications", "function", "modifier"),
  "baby": ("material", "specifications", "function", "season", "modifier"),
}

# Use cases of complex "use_case" queries (the one-hop lexicon): a phrase a
# user names -> (the L1s it is used in, the (attribute type, value) pairs it
# implies). The query says "jacket for hiking in the rain"; the intent wants
# the implied values, which the query never names (no phrase contains one of
# its values: tests/world/complex_queries_test.py), so a model must infer them.
# Every pair exists in the catalogue for every listed L1 (checked there too).
USE_CASES: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
  "hiking in the rain": (
    ("shoes", "bags", "electronics"),
    (("function", "waterproof"), ("scene", "outdoor")),
  ),
  "a rainy commute": (("shoes", "bags", "electronics"), (("function", "waterproof"),)),
  "long runs": (("shoes",), (("function", "shock absorbing"),)),
  "icy sidewalks": (("shoes",), (("function", "non-slip"), ("season", "winter"))),
  "sweaty workouts": (
    ("clothing", "sports"),
    (("function", "quick dry"), ("scene", "gym")),
  ),
  "hot yoga": (("sports",), (("function", "non-slip"), ("scene", "gym"))),
  "a heatwave": (
    ("clothing", "shoes"),
    (("function", "breathable"), ("season", "summer")),
  ),
  "freezing weather": (("clothing",), (("function", "warm"), ("season", "winter"))),
  "business meetings": (
    ("clothing", "shoes", "bags"),
    (("scene", "office"), ("style", "elegant")),
  ),
  "a cocktail evening": (
    ("clothing", "shoes", "bags"),
    (("scene", "party"), ("style", "elegant")),
  ),
  "a weekend in the mountains": (
    ("clothing", "shoes", "bags", "sports"),
    (("scene", "camping"),),
  ),
  "a long flight": (("clothing", "bags", "electronics"), (("scene", "travel"),)),
  "the first day of class": (("clothing", "shoes", "bags"), (("scene", "school"),)),
  "my grandpa": (
    ("clothing", "shoes", "beauty", "sports"),
    (("audience", "elderly"),),
  ),
  "a ten year old": (
    ("clothing", "shoes", "toys", "sports"),
    (("audience", "kids"),),
  ),
  "oily skin": (("beauty",), (("function", "oil control"),)),
  "dry skin": (("beauty",), (("function", "moisturizing"),)),
  "fine lines": (("beauty",), (("function", "anti-aging"),)),
  "sleeping in daytime": (("home",), (("function", "blackout"),)),
  "a tiny apartment": (("home",), (("function", "foldable"),)),
  "keeping coffee hot": (("kitchen",), (("function", "insulated"),)),
  "easy cleanup": (("kitchen",), (("function", "dishwasher safe"),)),
  "noisy commutes": (("electronics",), (("function", "noise cancelling"),)),
  "building muscle": (("food",), (("function", "high protein"),)),
  "a diabetic diet": (("food",), (("function", "sugar free"),)),
  "learning through play": (("toys",), (("function", "educational"),)),
  "a dog that chews everything": (("pets",), (("function", "chew resistant"),)),
  "a smelly litter box": (("pets",), (("function", "odor control"),)),
  "sensitive newborn skin": (("baby",), (("function", "hypoallergenic"),)),
  "overnight dryness": (("baby",), (("function", "leak proof"),)),
}

# Brand names and seller names are built from these syllables.
BRAND_SYLLABLES = (
  "ko", "ra", "mi", "zen", "lu", "vo", "ta", "ne", "sa", "fi", "do", "ri",
  "ka", "mo", "li", "an", "el", "ver", "ax", "on", "bel", "tor", "ny", "quo",
)  # fmt: skip
SELLER_WORDS = (
  "sunny", "golden", "happy", "urban", "green", "star", "blue", "lucky",
  "prime", "cozy", "bright", "royal",
)  # fmt: skip
SELLER_SUFFIXES = ("store", "shop", "mart", "outlet", "boutique", "trading")

# Demographics (KuaiSearch: 59.34% female).
GENDER_PROBS = {"female": 0.5934, "male": 0.3766, "unknown": 0.03}
AGE_BUCKETS = ("18-23", "24-30", "31-40", "41-49", "50+")
AGE_PROBS = (0.2, 0.3, 0.26, 0.14, 0.1)
# (country, province/state, city)
LOCATIONS_GEO = (
  ("china", "guangdong", "shenzhen"),
  ("china", "guangdong", "guangzhou"),
  ("china", "zhejiang", "hangzhou"),
  ("china", "beijing", "beijing"),
  ("china", "shanghai", "shanghai"),
  ("china", "sichuan", "chengdu"),
  ("china", "hubei", "wuhan"),
  ("china", "jiangsu", "nanjing"),
  ("china", "shandong", "qingdao"),
  ("china", "henan", "zhengzhou"),
  ("china", "hunan", "changsha"),
  ("china", "yunnan", "kunming"),
)

# Search entrances with KuaiSearch's shares (SPEC §7).
SEARCH_ENTRANCE_PROBS = {
  "mall": 0.4920,
  "homepage": 0.4486,
  "mall_placeholder": 0.0327,
  "homepage_placeholder": 0.0157,
  "detail_page": 0.0110,
}

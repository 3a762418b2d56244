"""Synthetic Instacart Market Basket sample, written in the exact Kaggle layout.

The whole project runs on this when no real data is given, so the generator is
built to be *worth* running: readable product names that agree with their aisle
(text embeddings and LLM prompts are computed on them), users with latent tastes
and staples, Zipf-like item popularity, Instacart's order/basket/timing shapes,
and a per-order latent "occasion" (written to order_occasions.csv) that shifts
the aisle mix and serves as a ground-truth positive control.

    uv run sample_generator.py --out-dir data/sample            # 5,000 users x 10,000 products
    uv run sample_generator.py --out-dir data/full --kaggle-size # ~206k users, ~32M prior rows

Calibration against real rows lives in calibration.py (it trains the project's models);
this module is a bottom-floor shared module: it imports nothing from the project.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm import tqdm

GENERATOR_VERSION = "1.2.0"  # bump whenever the bytes written for a given seed change
FULL_USERS, FULL_PRODUCTS = 206_209, 49_688  # size of the Kaggle release
KAGGLE_FILES = (
    "orders.csv",
    "order_products__prior.csv",
    "order_products__train.csv",
    "products.csv",
    "aisles.csv",
    "departments.csv",
)

# -----------------------------------------------------------------------------
# config: every constant below was tuned with `--calibrate` against real rows

USER_CHUNK = 2_000  # users generated per vectorised step (bounds peak memory)
ORDERS_LOG_MU = 2.55  # orders per user ~ lognormal, clipped to Kaggle's 4..100 ...
ORDERS_LOG_SD = 0.95  # ... which gives the 7/13/24 quartiles and the pile-up at 4
TRAIN_SHARE = 131_209 / 206_209  # the last order is 'train' for this share of users, else 'test'
BASKET_LOG_MU = 2.03  # per-user typical basket size (lognormal across users) ...
BASKET_LOG_SD = 0.45  # ... heavy-basket and light-basket shoppers
BASKET_SHAPE = 2.0  # gamma-Poisson shape of order-to-order basket variation
TASTE_CONC = 60.0  # Dirichlet concentration of a user's aisle taste (lower = pickier)
POOL_A, POOL_B = 14.0, 0.62  # pool draws = A * (expected items bought) ** B: the user's repertoire
# (1.1: 6.5; raised with AFFINITY_SD so distinct products/user hold)
AFFINITY_SD = 1.8  # lognormal spread of per-(user, item) affinity: makes staples
# (1.1 gave real top-frequency R@5 0.145 vs 0.208: staples too weak)
LATENT_DIM = 8  # latent item styles / user preferences (co-purchase structure
LATENT_USER_SD = 0.5  # ... that a two-tower can learn); user . item has sd SD * sqrt(DIM)
LATENT_CANDIDATES = 6  # pool draw: best-matching of this many popularity draws in the aisle
ZIPF_S = 1.1  # within-aisle popularity ~ rank ** -s (a few hits per aisle)
GAP_LOG_A, GAP_LOG_B = 3.90, 0.55  # user cadence: log(mean gap) = A - B * log(n_orders)
GAP_USER_SD, GAP_ORDER_SD = 0.65, 0.65  # spread of cadence across users and across orders
WEEKLY_SNAP = 0.13  # share of gaps snapped to a whole number of weeks (7, 14, 21, 28)
OCCASION_BETA = 3.8  # log-boost of an occasion's aisles (1.1 barely shaped baskets:
# occasion popularity R@20 was 1.07x global; 3.5 gave 1.46x at the real sample's size, 3.8 1.59x)
OCCASION_SIZE = {"party": 1.35, "weekly_restock": 1.25, "household": 0.8, "snacks": 0.8}
BABY_USER_SHARE = 0.10  # share of households with a baby (only they have 'baby' orders)
USER_TIME_STICKY = 0.55  # chance an order keeps the user's usual day / hour
CART_BONUS = {4: 0.5, 16: 0.3}  # produce, dairy eggs tend to go into the cart first
CART_REORDER_BONUS = 0.7  # ... and so do the user's usual items (real: reorder 0.70 at 1st slot)

# The real sample's headline figures (1,446 users, Kaggle layout; see --calibrate) that the
# constants above are tuned to reach and that do not depend on the catalogue size: the
# generator's own targets, checked by the tests without real data (tolerance REL_TOL).
TARGETS = {
    "basket size mean": 9.75,
    "orders/user p50": 13.0,
    "days since prior mean": 10.37,
    "days share <=7": 0.535,
}

# Share of each day of week / hour of day in Instacart orders (aggregate shape).
DOW_P = np.array([0.170, 0.175, 0.138, 0.129, 0.128, 0.135, 0.125])
HOUR_P = np.array(
    [6, 3, 2, 1, 2, 2, 9, 25, 52, 82, 93, 84, 80, 80, 84, 84, 77, 67, 50, 42, 30, 20, 16, 10],
    dtype=float,
)
HOUR_P /= HOUR_P.sum()

# Instacart's 21 departments (Kaggle ids), the share of real prior rows in each
# (the calibration target) and the share of the catalogue's products in each.
DEPARTMENTS = (
    "frozen",
    "other",
    "bakery",
    "produce",
    "alcohol",
    "international",
    "beverages",
    "pets",
    "dry goods pasta",
    "bulk",
    "personal care",
    "meat seafood",
    "pantry",
    "breakfast",
    "canned goods",
    "dairy eggs",
    "household",
    "babies",
    "snacks",
    "deli",
    "missing",
)
DEPT_ROW_SHARE = np.array(
    [
        0.0700,
        0.0013,
        0.0375,
        0.2906,
        0.0059,
        0.0084,
        0.0828,
        0.0030,
        0.0258,
        0.0013,
        0.0133,
        0.0213,
        0.0587,
        0.0236,
        0.0318,
        0.1684,
        0.0231,
        0.0110,
        0.0898,
        0.0305,
        0.0019,
    ]
)
DEPT_PRODUCTS = np.array(
    [
        4007,
        548,
        1516,
        1684,
        1054,
        1139,
        4365,
        972,
        1858,
        38,
        6563,
        907,
        5371,
        1115,
        2092,
        3449,
        3085,
        1081,
        6264,
        1322,
        1258,
    ],
    dtype=float,
)
# Calibration correction per department (rows come out of the basket model off the
# aisle weights: heavy produce staples saturate at one per basket, and the strong
# occasion boost over-serves the occasion aisles). Fitted by iterating
# DEPT_FIX *= (real / generated share) ** 0.8 at the real sample's size.
DEPT_FIX = np.array(
    [
        0.809,
        1.906,
        0.918,
        1.202,
        0.774,
        0.556,
        0.997,
        2.163,
        0.518,
        1.67,
        1.36,
        0.524,
        0.957,
        1.097,
        1.96,
        1.224,
        0.801,
        1.589,
        0.645,
        1.044,
        1.886,
    ]
)

# -----------------------------------------------------------------------------
# vocabulary: aisle name ; department id ; weight within department ; base nouns ; modifiers
# A product name is "[qualifier] [modifier] noun [size]"; simplest names get the most
# popular ranks, so the head of each aisle reads like "Bananas", "Organic Baby Spinach".

AISLES = """
frozen meals;1;3;Lasagna|Burrito|Mac and Cheese|Pot Pie|Enchiladas|Fried Rice|Chicken Alfredo|Meatloaf Dinner|Bowl|Pad Thai;Chicken|Beef|Vegetable|Three Cheese|Teriyaki|Spicy|Family Size|Single Serve|Roasted Garlic
frozen pizza;1;2;Pizza|Flatbread Pizza|Pizza Rolls|French Bread Pizza|Pizza Bites;Pepperoni|Margherita|Supreme|Four Cheese|Sausage|Veggie|Thin Crust|Rising Crust|BBQ Chicken
ice cream;1;3;Ice Cream|Gelato|Frozen Yogurt|Sorbet|Ice Cream Sandwiches|Ice Cream Bars;Vanilla Bean|Chocolate|Mint Chip|Cookie Dough|Salted Caramel|Strawberry|Coffee|Rocky Road|Butter Pecan|Mango
frozen vegetables;1;3;Peas|Broccoli Florets|Sweet Corn|Green Beans|Mixed Vegetables|Spinach|Cauliflower Rice|Edamame|Stir Fry Vegetables|Brussels Sprouts;Steamable|Petite|Cut|Chopped|Lightly Seasoned|Garden|Roasted|Butter Sauce
frozen fruit;1;2;Strawberries|Blueberries|Mango Chunks|Mixed Berries|Pineapple Chunks|Cherries|Peaches|Acai Packs;Sliced|Whole|Wild|Unsweetened|Smoothie Blend|Dark Sweet|Tropical
frozen breakfast;1;2;Waffles|Pancakes|Breakfast Sandwiches|Breakfast Burritos|French Toast Sticks|Hash Browns;Homestyle|Buttermilk|Blueberry|Whole Grain|Sausage Egg and Cheese|Bacon Egg and Cheese|Gluten Free|Cinnamon
frozen appetizers;1;2;Chicken Nuggets|Mozzarella Sticks|Egg Rolls|Potstickers|Taquitos|Chicken Wings|Meatballs|Dumplings;Crispy|Breaded|Buffalo|Pork|Chicken|Vegetable|Beef and Cheese|Honey Garlic
frozen desserts;1;1;Fruit Bars|Pie|Cheesecake|Whipped Topping|Ice Pops|Mochi;Lemon|Apple|Cherry|Key Lime|Coconut|Strawberry|Pumpkin|Chocolate
frozen meat seafood;1;1;Shrimp|Salmon Fillets|Fish Sticks|Turkey Burgers|Chicken Breasts|Cod Fillets|Beef Patties|Tilapia;Wild Caught|Raw|Cooked|Breaded|Individually Frozen|Grilled|Beer Battered|Lemon Pepper
frozen breads doughs;1;1;Garlic Bread|Dinner Rolls|Pie Crust|Puff Pastry|Biscuits|Texas Toast;Five Cheese|Butter|Deep Dish|Flaky|Southern Style|Whole Wheat|Parmesan
other goods;2;1;Gift Card Holder|Reusable Bag|Ice Pack|Party Balloons|Greeting Card|Twine|Cooler Bag|Flower Bouquet;Assorted|Large|Small|Insulated|Seasonal|Birthday|Printed|Classic
sandwich breads;3;3;Bread|Sandwich Bread|Sourdough Loaf|Rye Bread|English Muffins|Multigrain Bread|Brioche Loaf|Potato Bread;Whole Wheat|White|Honey Oat|Seeded|Sprouted Grain|Sliced|Thin Sliced|Cinnamon Raisin|Country
buns rolls;3;2;Hamburger Buns|Hot Dog Buns|Dinner Rolls|Hoagie Rolls|Slider Buns|Kaiser Rolls|Croissants;Brioche|Potato|Whole Wheat|Sesame|Pretzel|Hawaiian Sweet|Mini|Butter
tortillas flatbreads;3;2;Tortillas|Pita Bread|Naan|Wraps|Flatbread|Lavash;Flour|Corn|Whole Wheat|Spinach|Garlic|Low Carb|Street Taco|Mini|Everything
cakes pastries;3;1;Muffins|Cupcakes|Donuts|Cinnamon Rolls|Pound Cake|Brownies|Danish|Cookies;Blueberry|Chocolate Chip|Glazed|Lemon|Vanilla|Double Chocolate|Apple|Pumpkin Spice
bagels;3;1;Bagels|Mini Bagels|Bagel Thins|Bialys;Plain|Everything|Sesame|Cinnamon Raisin|Onion|Blueberry|Whole Wheat|Poppy Seed
fresh fruits;4;10;Bananas|Strawberries|Blueberries|Raspberries|Avocados|Lemons|Limes|Apples|Red Grapes|Navel Oranges|Pears|Peaches|Mangoes|Pineapple|Watermelon|Cantaloupe|Cherries|Kiwi|Clementines|Blackberries;Ripe|Large|Sweet|Jumbo|Bagged|Local|Premium|Fresh|Value Pack
fresh vegetables;4;8;Baby Spinach|Yellow Onions|Garlic|Cucumbers|Broccoli Crowns|Carrots|Zucchini|Red Bell Peppers|Roma Tomatoes|Cherry Tomatoes|Russet Potatoes|Sweet Potatoes|Celery|Asparagus|Cauliflower|Kale|Green Onions|Jalapeno Peppers|Mushrooms|Romaine Hearts;Bunch of|Bag of|Baby|Large|Sweet|Fresh|Rainbow|Petite|Local|Loose
packaged greens;4;4;Spring Mix|Baby Arugula|Spinach and Spring Mix|Chopped Salad Kit|Caesar Salad Kit|Shredded Lettuce|Coleslaw Mix|Butter Lettuce|Power Greens;Organic Baby|Triple Washed|Family Size|Crisp|Tender|Chopped|Sweet Kale|Southwest|Super
fresh herbs;4;2;Cilantro|Basil|Italian Parsley|Mint|Dill|Rosemary|Thyme|Ginger Root|Chives;Fresh|Bunch of|Organic|Living|Clamshell|Sweet|Flat Leaf|Hydroponic
cut fruit vegetables;4;3;Fruit Medley|Cut Pineapple|Baby Carrots|Celery Sticks|Veggie Tray|Apple Slices|Melon Chunks|Broccoli Florets|Stir Fry Mix;Fresh Cut|Snack Size|Party Size|Mini|Peeled|Ready to Eat|Family Size
red wine;5;2;Cabernet Sauvignon|Pinot Noir|Merlot|Malbec|Red Blend|Zinfandel|Syrah|Chianti;Reserve|California|Old Vine|Dry|Estate|Oak Aged|Smooth|Bold
white wine;5;2;Chardonnay|Sauvignon Blanc|Pinot Grigio|Riesling|Rose|Prosecco|Moscato|Champagne;Dry|Sparkling|Unoaked|Crisp|Estate|Reserve|Sweet|Brut
beer;5;3;Lager|IPA|Pale Ale|Pilsner|Stout|Wheat Beer|Amber Ale|Light Beer;Hazy|Session|Double|Imperial|Craft|Citrus|Mexican|Belgian Style
spirits;5;1;Vodka|Tequila Blanco|Bourbon|Gin|Spiced Rum|Scotch Whisky|Mezcal;Premium|Small Batch|Citrus|Aged|Silver|London Dry|Single Malt
hard seltzer cider;5;1;Hard Seltzer|Hard Cider|Hard Kombucha|Canned Cocktail|Hard Lemonade;Black Cherry|Lime|Grapefruit|Mango|Variety Pack|Dry Apple|Raspberry
asian foods;6;3;Soy Sauce|Ramen Noodles|Rice Noodles|Coconut Milk|Sriracha Sauce|Curry Paste|Seaweed Snacks|Hoisin Sauce|Miso Paste|Rice Vinegar;Low Sodium|Thai|Korean|Japanese|Spicy|Green|Red|Roasted|Toasted Sesame
mexican foods;6;3;Salsa|Taco Shells|Refried Beans|Enchilada Sauce|Tortilla Chips|Green Chiles|Taco Seasoning|Queso Dip;Medium|Hot|Mild|Chipotle|Salsa Verde|Restaurant Style|Fire Roasted|Black Bean
indian foods;6;1;Tikka Masala Sauce|Basmati Rice|Chana Masala|Mango Chutney|Garam Masala|Naan Chips|Lentil Dal|Simmer Sauce;Mild|Spicy|Madras|Butter Chicken|Korma|Vindaloo|Coconut
mediterranean foods;6;1;Grape Leaves|Falafel Mix|Tahini|Couscous|Harissa|Pita Chips|Kalamata Olives|Tabbouleh;Greek|Lebanese|Moroccan|Roasted Red Pepper|Lemon Herb|Sea Salt|Pearl
sparkling water;7;4;Sparkling Water|Seltzer Water|Mineral Water|Sparkling Juice|Flavored Water;Grapefruit|Lime|Lemon|Black Cherry|Pure|Raspberry Lime|Orange|Berry|Coconut|Cucumber|Pamplemousse|Cherry Lime
bottled water;7;2;Spring Water|Purified Water|Alkaline Water|Electrolyte Water|Artesian Water|Coconut Water;Natural|Pure|Still|Smart|Pure Life|Premium|Mountain
juice nectars;7;3;Orange Juice|Apple Juice|Lemonade|Cranberry Juice Cocktail|Grape Juice|Green Juice|Pineapple Juice|Tomato Juice|Juice Boxes;No Pulp|Pulp Free|Some Pulp|Not From Concentrate|Cold Pressed|100%|Light|Calcium Fortified|Organic
soft drinks;7;3;Cola|Lemon Lime Soda|Root Beer|Ginger Ale|Orange Soda|Tonic Water|Club Soda|Cream Soda;Diet|Zero Sugar|Caffeine Free|Cherry|Vanilla|Mini Cans|Craft|Classic
coffee;7;3;Ground Coffee|Whole Bean Coffee|K-Cup Pods|Cold Brew Coffee|Instant Coffee|Espresso Beans|Iced Coffee;French Roast|Medium Roast|Dark Roast|Breakfast Blend|Colombian|Decaf|Vanilla|Mocha|Light Roast
tea;7;2;Green Tea|Black Tea|Chamomile Tea|Herbal Tea|Iced Tea|Chai Tea|Earl Grey Tea|Matcha;Decaf|Peppermint|Honey Lemon|Sweetened|Unsweetened|Jasmine|Ginger|Peach
energy sports drinks;7;2;Energy Drink|Sports Drink|Electrolyte Drink|Protein Shake|Vitamin Water|Energy Shot;Sugar Free|Fruit Punch|Lemon Lime|Tropical|Cool Blue|Zero|Original|Berry Blast
cocoa drink mixes;7;1;Hot Cocoa Mix|Drink Mix|Powdered Lemonade|Chocolate Syrup|Malted Milk Powder;Rich Milk Chocolate|Mint|Marshmallow|Sugar Free|Raspberry|Classic|Dark Chocolate
dog food care;8;2;Dry Dog Food|Wet Dog Food|Dog Treats|Dog Biscuits|Dental Chews|Puppy Food;Chicken and Rice|Beef|Lamb and Rice|Grain Free|Salmon|Small Breed|Large Breed|Senior
cat food care;8;2;Dry Cat Food|Wet Cat Food|Cat Treats|Cat Litter|Kitten Food|Pate;Salmon|Chicken|Tuna|Turkey|Indoor|Clumping|Unscented|Seafood Medley
dry pasta;9;3;Spaghetti|Penne Rigate|Elbow Macaroni|Rotini|Fettuccine|Linguine|Farfalle|Lasagna Noodles|Egg Noodles|Orzo;Whole Wheat|Gluten Free|Chickpea|Red Lentil|Thin|Protein Plus|Bronze Cut|Organic
pasta sauce;9;3;Marinara Sauce|Tomato Basil Sauce|Alfredo Sauce|Vodka Sauce|Pesto|Arrabbiata Sauce|Bolognese Sauce;Roasted Garlic|Traditional|Four Cheese|Spicy|Basil|Mushroom|Light|Tomato
grains rice;9;2;Jasmine Rice|Brown Rice|Quinoa|Long Grain White Rice|Wild Rice Blend|Farro|Arborio Rice|Pearl Barley;Organic|Tricolor|Microwavable|Instant|Sprouted|Thai|Whole Grain
dried beans lentils;9;1;Black Beans|Pinto Beans|Red Lentils|Green Lentils|Chickpeas|Split Peas|Navy Beans;Dried|Organic|Bagged|French|Yellow|Sprouted
boxed dinners;9;2;Macaroni and Cheese|Rice Pilaf|Pasta Side|Stuffing Mix|Instant Mashed Potatoes|Ramen Cups;Shells and Cheddar|White Cheddar|Chicken Flavor|Butter and Herb|Four Cheese|Spicy|Family Size
bulk nuts seeds;10;1;Raw Almonds|Cashews|Walnut Halves|Pumpkin Seeds|Chia Seeds|Flax Seeds|Sunflower Kernels;Bulk|Unsalted|Roasted|Raw|Organic|Sprouted
bulk grains dried fruit;10;1;Rolled Oats|Dried Cranberries|Raisins|Medjool Dates|Dried Apricots|Brown Rice;Bulk|Organic|Unsweetened|Sulfur Free|Golden|Thick Cut
shampoo conditioner;11;2;Shampoo|Conditioner|2 in 1 Shampoo|Dry Shampoo|Leave In Conditioner;Moisturizing|Volumizing|Clarifying|Tea Tree|Argan Oil|Coconut|Curl Defining|Color Safe|Anti Dandruff
body wash soap;11;2;Body Wash|Bar Soap|Hand Soap|Shower Gel|Foaming Hand Soap;Lavender|Oatmeal|Shea Butter|Unscented|Eucalyptus|Citrus|Aloe|Charcoal|Sensitive Skin
oral care;11;2;Toothpaste|Toothbrush|Mouthwash|Dental Floss|Whitening Strips;Whitening|Fresh Mint|Sensitive|Charcoal|Fluoride Free|Soft Bristle|Cinnamon|Kids|Cool Mint
deodorant;11;1;Deodorant|Antiperspirant|Body Spray|Deodorant Stick;Unscented|Sport|Aluminum Free|Clinical Strength|Powder Fresh|Cedarwood|Lavender
skin care;11;2;Face Wash|Moisturizer|Body Lotion|Lip Balm|Face Serum|Cleansing Wipes|Hand Cream;Hydrating|Gentle|Vitamin C|Fragrance Free|Oil Free|Night|Daily|Cocoa Butter
shaving;11;1;Razors|Shaving Cream|Razor Cartridges|Aftershave Balm|Shave Gel;Sensitive|Disposable|5 Blade|Moisturizing|Aloe|Menthol|Smooth
vitamins supplements;11;2;Multivitamin|Vitamin D3|Vitamin C|Fish Oil|Probiotic|Magnesium|Melatonin|Elderberry Gummies|Biotin;Extra Strength|Daily|Women's|Men's|Kids|High Potency|Chewable|Vegan|Once Daily
pain relief;11;1;Ibuprofen|Acetaminophen|Aspirin|Naproxen|Pain Relieving Cream|Heat Patches;Extra Strength|Tablets|Caplets|Liquid Gels|Low Dose|Rapid Release|Junior
cold allergy;11;1;Allergy Relief|Cough Syrup|Cold and Flu Relief|Nasal Spray|Throat Lozenges|Saline Spray;Non Drowsy|Nighttime|Daytime|Honey Lemon|24 Hour|Cherry|Children's
first aid;11;1;Adhesive Bandages|Antibiotic Ointment|Hydrogen Peroxide|Rubbing Alcohol|Gauze Pads|Cotton Balls|Cotton Swabs;Waterproof|Flexible Fabric|Sterile|Assorted|Sensitive|Large|Travel
feminine care;11;1;Tampons|Pads|Panty Liners|Menstrual Cup|Feminine Wash;Regular|Super|Overnight|Ultra Thin|Unscented|Organic Cotton|Light
hair styling;11;1;Hair Gel|Hair Spray|Styling Cream|Hair Elastics|Mousse|Hair Oil;Strong Hold|Flexible Hold|Frizz Control|Curl|Argan|Texturizing|Heat Protect
cosmetics;11;1;Mascara|Lipstick|Nail Polish|Makeup Remover|Eyeliner|Foundation;Waterproof|Matte|Nude|Volumizing|Long Wear|Sheer|Micellar
sun care;11;1;Sunscreen Lotion|Sunscreen Spray|After Sun Gel|Sunscreen Stick|Tinted Sunscreen;SPF 30|SPF 50|Mineral|Sport|Kids|Aloe|Water Resistant
eye ear care;11;1;Eye Drops|Contact Lens Solution|Ear Drops|Reading Glasses|Eye Mask;Lubricant|Redness Relief|Multi Purpose|Sensitive|Cooling|Daily
digestive health;11;1;Antacid Tablets|Fiber Supplement|Stool Softener|Gas Relief|Laxative|Digestive Enzymes;Berry|Chewable|Sugar Free|Extra Strength|Orange|Gentle|Daily
protein fitness;11;1;Protein Powder|Collagen Peptides|Protein Bars|Pre Workout|Creatine|Meal Replacement Shake;Vanilla|Chocolate|Unflavored|Whey|Plant Based|Cookies and Cream|Berry
poultry;12;3;Chicken Breasts|Chicken Thighs|Ground Turkey|Whole Chicken|Chicken Drumsticks|Chicken Tenderloins|Turkey Breast|Chicken Wings;Boneless Skinless|Organic|Free Range|Air Chilled|Bone In|Lean|Family Pack|Marinated
beef;12;2;Ground Beef|Ribeye Steak|Sirloin Steak|Stew Meat|Flank Steak|Chuck Roast|Beef Short Ribs;Grass Fed|85% Lean|93% Lean|Angus|Choice|Thin Sliced|Family Pack
pork;12;1;Pork Chops|Pork Tenderloin|Ground Pork|Pork Shoulder|Baby Back Ribs|Ham Steak;Boneless|Bone In|Center Cut|Marinated|Smoked|Thick Cut
sausages hot dogs;12;2;Italian Sausage|Breakfast Sausage|Hot Dogs|Bratwurst|Chicken Sausage|Andouille Sausage|Kielbasa;Mild|Hot|Uncured|Apple|Beef|Turkey|Smoked|Links
fish seafood;12;2;Salmon Fillet|Shrimp|Tilapia Fillets|Cod Fillet|Tuna Steak|Scallops|Crab Meat|Mussels;Wild Alaskan|Atlantic|Peeled and Deveined|Cooked|Raw|Jumbo|Skin On|Fresh
bacon;12;2;Bacon|Turkey Bacon|Canadian Bacon|Pancetta|Bacon Bits;Applewood Smoked|Hickory Smoked|Thick Cut|Center Cut|Uncured|Maple|Lower Sodium
specialty meats;12;1;Lamb Chops|Ground Lamb|Bison Burgers|Duck Breast|Veal Cutlets|Ground Chicken;Grass Fed|Frenched|Pasture Raised|Seasoned|Lean|Premium
baking ingredients;13;3;All Purpose Flour|Baking Soda|Baking Powder|Vanilla Extract|Chocolate Chips|Cocoa Powder|Cornstarch|Yeast|Almond Flour|Powdered Sugar;Unbleached|Pure|Semi Sweet|Dark|Aluminum Free|Active Dry|Blanched|Whole Wheat
spices seasonings;13;3;Sea Salt|Black Peppercorns|Garlic Powder|Ground Cinnamon|Paprika|Cumin|Chili Powder|Oregano|Onion Powder|Italian Seasoning|Red Pepper Flakes|Turmeric;Ground|Smoked|Whole|Fine|Coarse|Kosher|Himalayan Pink|Crushed|Organic
oils vinegars;13;3;Extra Virgin Olive Oil|Avocado Oil|Canola Oil|Coconut Oil|Balsamic Vinegar|Apple Cider Vinegar|Sesame Oil|Red Wine Vinegar|Cooking Spray;Cold Pressed|Unrefined|Refined|Raw|Aged|Toasted|Light|Pure
condiments;13;3;Ketchup|Yellow Mustard|Mayonnaise|Dijon Mustard|BBQ Sauce|Hot Sauce|Relish|Worcestershire Sauce|Horseradish;Organic|Spicy Brown|Whole Grain|Honey|Sweet|Smoky|Light|Avocado Oil|Chipotle
salad dressings;13;2;Ranch Dressing|Caesar Dressing|Italian Dressing|Balsamic Vinaigrette|Blue Cheese Dressing|Honey Mustard|Thousand Island|Greek Dressing;Light|Creamy|Buttermilk|Fat Free|Lemon|Roasted Garlic|Classic
spreads;13;3;Peanut Butter|Almond Butter|Strawberry Jam|Grape Jelly|Nutella Style Spread|Orange Marmalade|Cashew Butter|Apricot Preserves;Creamy|Crunchy|Natural|No Stir|Reduced Sugar|Seedless|Honey Roasted|Organic
honey syrups;13;2;Honey|Maple Syrup|Agave Nectar|Pancake Syrup|Molasses|Caramel Sauce;Raw|Pure|Grade A Amber|Dark|Wildflower|Clover|Light
soup broth;13;2;Chicken Broth|Vegetable Broth|Beef Broth|Bone Broth|Bouillon Cubes|Chicken Stock;Low Sodium|Fat Free|Organic|Free Range|Unsalted|Roasted
baking mixes;13;1;Brownie Mix|Cake Mix|Cornbread Mix|Cookie Mix|Frosting|Muffin Mix|Pizza Crust Mix;Fudge|Yellow|Chocolate|Vanilla|Gluten Free|Funfetti|Cream Cheese
marinades sauces;13;1;Teriyaki Marinade|Steak Sauce|Stir Fry Sauce|Garlic Sauce|Buffalo Sauce|Pizza Sauce|Tomato Paste;Original|Low Sodium|Sesame Ginger|Roasted Garlic|Hot|Sweet and Sour
pickles olives;13;1;Dill Pickles|Bread and Butter Pickles|Green Olives|Black Olives|Pepperoncini|Capers|Sauerkraut;Kosher|Sliced|Spears|Pitted|Stuffed|Whole|Baby
sugar sweeteners;13;1;Granulated Sugar|Brown Sugar|Stevia|Coconut Sugar|Monk Fruit Sweetener|Turbinado Sugar;Pure Cane|Light|Dark|Organic|Zero Calorie|Raw
cold cereal;14;3;Corn Flakes|Honey Nut O's|Raisin Bran|Frosted Wheat Squares|Granola Clusters|Puffed Rice|Bran Flakes|Crispy Rice Cereal|Cocoa Puffs;Whole Grain|Frosted|Honey|Cinnamon|Multigrain|Low Sugar|Family Size|Original
hot cereal;14;2;Old Fashioned Oats|Instant Oatmeal|Steel Cut Oats|Cream of Wheat|Grits|Quick Oats;Maple Brown Sugar|Apple Cinnamon|Original|Gluten Free|Peaches and Cream|Plain|Organic
granola;14;2;Granola|Muesli|Grain Free Granola|Granola Bites;Honey Almond|Vanilla Blueberry|Dark Chocolate|Coconut Cashew|Maple Pecan|Low Sugar|Ancient Grain
breakfast bars pastries;14;1;Toaster Pastries|Breakfast Biscuits|Cereal Bars|Nutri Bars|Breakfast Cookies;Frosted Strawberry|Brown Sugar Cinnamon|Blueberry|Apple Cinnamon|Chocolate Chip|Oat
canned soup;15;2;Chicken Noodle Soup|Tomato Soup|Minestrone|Clam Chowder|Lentil Soup|Split Pea Soup|Vegetable Soup|Cream of Mushroom Soup;Hearty|Condensed|Low Sodium|Homestyle|Organic|Chunky|Light
canned vegetables;15;2;Diced Tomatoes|Crushed Tomatoes|Whole Kernel Corn|Cut Green Beans|Tomato Sauce|Sweet Peas|Pumpkin Puree|Artichoke Hearts;No Salt Added|Fire Roasted|Italian Style|Petite|Organic|Cut|Quartered
canned beans;15;2;Black Beans|Garbanzo Beans|Kidney Beans|Cannellini Beans|Pinto Beans|Baked Beans|Great Northern Beans;Low Sodium|Organic|No Salt Added|Vegetarian|Dark Red|Seasoned
canned fish meat;15;1;Chunk Light Tuna|Albacore Tuna|Canned Salmon|Sardines|Canned Chicken|Anchovies|Spam;In Water|In Olive Oil|Wild|Solid White|Skinless|Boneless|Lemon Pepper
canned fruit;15;1;Mandarin Oranges|Peach Slices|Applesauce|Pineapple Chunks|Fruit Cocktail|Pear Halves|Cranberry Sauce;In Juice|No Sugar Added|Light Syrup|Unsweetened|Cinnamon|Whole Berry
milk;16;5;Whole Milk|2% Reduced Fat Milk|1% Lowfat Milk|Fat Free Milk|Lactose Free Milk|Chocolate Milk|Half Gallon Milk;Organic|Grassfed|Ultra Filtered|Vitamin D|A2|Local Farm|Ultra Pasteurized
plant milks;16;2;Almond Milk|Oat Milk|Soy Milk|Coconut Milk Beverage|Cashew Milk|Pea Milk;Unsweetened|Original|Vanilla|Barista Edition|Chocolate|Extra Creamy|Light
yogurt;16;5;Greek Yogurt|Yogurt|Skyr|Kefir|Yogurt Tubes|Drinkable Yogurt|Whole Milk Yogurt;Plain|Vanilla|Strawberry|Blueberry|Nonfat|Honey|Peach|Mixed Berry|Coconut|Lowfat
eggs;16;3;Large Eggs|Extra Large Eggs|Brown Eggs|Egg Whites|Hard Boiled Eggs|Jumbo Eggs;Cage Free|Pasture Raised|Free Range|Organic|Omega 3|Grade A|Liquid
sliced shredded cheese;16;4;Cheddar Cheese|Mozzarella Cheese|Swiss Cheese Slices|Provolone Slices|Mexican Blend Cheese|Pepper Jack Cheese|American Cheese Slices|Colby Jack|String Cheese;Sharp|Mild|Shredded|Sliced|Low Moisture|Part Skim|Extra Sharp|Finely Shredded
specialty cheese;16;2;Parmesan|Brie|Goat Cheese|Feta|Fresh Mozzarella|Gouda|Blue Cheese|Manchego|Ricotta;Aged|Crumbled|Smoked|Whole Milk|Grated|Herbed|Creamy|Wedge
butter;16;2;Butter|Salted Butter|Unsalted Butter|Ghee|Buttery Spread|Cultured Butter;Sweet Cream|Grass Fed|European Style|Whipped|Light|Irish
cream creamers;16;2;Half and Half|Heavy Whipping Cream|Coffee Creamer|Whipped Cream|Oat Creamer|Sour Cream;French Vanilla|Hazelnut|Caramel|Ultra Pasteurized|Light|Sweet Cream|Fat Free
cottage cheese cream cheese;16;2;Cottage Cheese|Cream Cheese|Whipped Cream Cheese|Cream Cheese Spread|Mascarpone;Small Curd|Lowfat|Whole Milk|Chive and Onion|Strawberry|Plain|Light
refrigerated doughs desserts;16;1;Crescent Rolls|Biscuit Dough|Cookie Dough|Pudding Cups|Pie Crusts|Pizza Dough;Flaky|Buttermilk|Chocolate Chip|Vanilla|Rice|Sugar Cookie|Original
paper goods;17;3;Paper Towels|Toilet Paper|Facial Tissues|Napkins|Paper Plates;Select A Size|Double Rolls|Mega Rolls|Ultra Soft|Strong|Recycled|Lotion|Everyday
laundry;17;2;Laundry Detergent|Fabric Softener|Dryer Sheets|Stain Remover|Laundry Pods|Bleach;Free and Clear|Fresh Scent|Lavender|High Efficiency|Unscented|Original|Sensitive
dish detergent;17;2;Dish Soap|Dishwasher Pods|Dishwasher Detergent|Rinse Aid|Sponges|Scrub Brush;Lemon|Free and Clear|Ultra|Heavy Duty|Non Scratch|Original|Grapefruit
cleaning supplies;17;2;All Purpose Cleaner|Glass Cleaner|Disinfecting Wipes|Bathroom Cleaner|Toilet Bowl Cleaner|Floor Cleaner|Multi Surface Spray;Lemon|Fresh Scent|Unscented|Lavender|Bleach Free|Plant Based|Citrus
trash bags food storage;17;2;Trash Bags|Sandwich Bags|Aluminum Foil|Plastic Wrap|Freezer Bags|Parchment Paper|Food Storage Containers;Tall Kitchen|Drawstring|Heavy Duty|Gallon|Quart|Non Stick|Reusable
plates cups;17;1;Plastic Cups|Paper Bowls|Plastic Forks|Straws|Party Plates|Coffee Cups;Disposable|Compostable|Heavy Duty|Red|Clear|Bamboo|Insulated
air fresheners candles;17;1;Air Freshener|Scented Candle|Plug In Refill|Odor Eliminator|Reed Diffuser;Linen|Vanilla|Lavender|Fresh Cotton|Ocean Breeze|Apple Cinnamon|Unscented
batteries light bulbs;17;1;AA Batteries|AAA Batteries|LED Light Bulbs|9V Batteries|Flashlight|Extension Cord;Alkaline|Rechargeable|Soft White|Daylight|Long Lasting|Dimmable
kitchen supplies;17;1;Dish Towels|Oven Mitt|Kitchen Shears|Measuring Cups|Can Opener|Cutting Board|Water Filter;Cotton|Silicone|Stainless Steel|Bamboo|Replacement|Heavy Duty
pest control;17;1;Ant Traps|Mouse Traps|Insect Repellent|Fly Ribbon|Roach Bait|Citronella Candle;Indoor|Outdoor|Deet Free|Natural|Long Lasting|Max Strength
baby food;18;3;Baby Food Pouch|Puffs|Teething Wafers|Yogurt Melts|Baby Cereal|Toddler Snack Bars;Apple Banana|Pear Spinach|Sweet Potato|Mango|Strawberry|Blueberry|Oatmeal|Carrot|Stage 2
diapers wipes;18;3;Diapers|Baby Wipes|Training Pants|Overnight Diapers|Swim Diapers;Size 1|Size 2|Size 3|Size 4|Size 5|Newborn|Sensitive|Unscented|Hypoallergenic
baby formula;18;2;Infant Formula|Toddler Formula|Ready to Feed Formula|Soy Formula;Gentle|Sensitive|Organic|Non GMO|With Iron|Powder|Advantage
baby care;18;1;Baby Wash|Baby Lotion|Diaper Rash Cream|Baby Shampoo|Baby Oil|Pacifiers;Tear Free|Calming|Lavender|Fragrance Free|Soothing|Gentle
chips;19;4;Potato Chips|Tortilla Chips|Kettle Chips|Pita Chips|Veggie Straws|Plantain Chips|Cheese Puffs|Corn Chips;Sea Salt|Sour Cream and Onion|BBQ|Salt and Vinegar|Jalapeno|Lime|Cheddar|Lightly Salted|Ranch
crackers;19;3;Crackers|Graham Crackers|Rice Crackers|Water Crackers|Cheese Crackers|Pretzel Crackers|Seed Crackers;Whole Wheat|Sea Salt|Cheddar|Cracked Pepper|Everything|Honey|Rosemary|Multigrain
cookies cakes;19;3;Chocolate Chip Cookies|Sandwich Cookies|Oatmeal Cookies|Shortbread|Wafer Cookies|Snack Cakes|Biscotti|Animal Crackers;Double Chocolate|Vanilla|Mint|Lemon|Peanut Butter|Soft Baked|Mini|Gluten Free
candy chocolate;19;3;Dark Chocolate Bar|Milk Chocolate Bar|Gummy Bears|Peanut Butter Cups|Licorice|Caramels|Chocolate Covered Almonds|Sour Candy;Sea Salt|Almond|70% Cacao|Mint|Strawberry|Fruit|Fun Size|Toffee
nuts seeds;19;3;Almonds|Cashews|Pistachios|Mixed Nuts|Peanuts|Walnuts|Pecans|Sunflower Seeds;Roasted|Salted|Unsalted|Honey Roasted|Raw|Smoked|Lightly Salted|Dry Roasted
popcorn pretzels;19;2;Popcorn|Pretzels|Pretzel Twists|Pretzel Crisps|Kettle Corn|Microwave Popcorn;Sea Salt|Butter|White Cheddar|Honey Wheat|Sourdough|Sweet and Salty|Light
granola energy bars;19;3;Granola Bars|Protein Bars|Fruit and Nut Bars|Chewy Bars|Energy Bites|Nut Butter Bars;Chocolate Chip|Peanut Butter|Blueberry Almond|Dark Chocolate Sea Salt|Oats and Honey|Cranberry|Coconut
fruit snacks;19;2;Fruit Snacks|Fruit Leather|Fruit Strips|Applesauce Pouches|Fruit Rolls;Mixed Berry|Strawberry|Tropical|Grape|Apple|Cherry|Organic
dried fruit trail mix;19;2;Trail Mix|Dried Mango|Raisins|Dried Cranberries|Banana Chips|Apple Chips|Dried Figs;Mountain|Tropical|Sweet and Salty|Unsweetened|Chewy|Crunchy|Golden
rice cakes;19;1;Rice Cakes|Corn Cakes|Rice Crisps|Seaweed Rice Crackers;Lightly Salted|Caramel|Apple Cinnamon|White Cheddar|Brown Rice|Chocolate
mints gum;19;1;Chewing Gum|Breath Mints|Bubble Gum|Cough Drops;Spearmint|Peppermint|Wintergreen|Sugar Free|Cinnamon|Fruit|Cool Mint
deli meats;20;3;Turkey Breast|Black Forest Ham|Roast Beef|Genoa Salami|Pepperoni|Chicken Breast|Prosciutto|Bologna;Oven Roasted|Smoked|Honey|Thin Sliced|Uncured|Mesquite|Low Sodium|Peppered
deli cheese;20;1;Provolone|Swiss|Muenster|Havarti|Cheddar|Pepper Jack;Sliced|Deli|Baby|Aged|Smoked|Mild
hummus dips salsa;20;3;Hummus|Guacamole|Fresh Salsa|Tzatziki|Spinach Artichoke Dip|French Onion Dip|Pico de Gallo|Queso;Classic|Roasted Red Pepper|Roasted Garlic|Spicy|Mild|Medium|Lemon|Everything
prepared meals;20;2;Rotisserie Chicken|Chicken Salad|Pasta Salad|Potato Salad|Sushi Roll|Mac and Cheese|Quiche|Egg Salad;Classic|Family Size|Cajun|Mediterranean|California|Homestyle|Dill|Spicy
tofu meat alternatives;20;2;Tofu|Tempeh|Plant Based Burger|Veggie Burger|Seitan|Meatless Crumbles|Plant Based Sausage;Extra Firm|Firm|Silken|Organic|Smoked|Teriyaki|Black Bean|Original
missing;21;1;Assorted Item|Seasonal Item|Mixed Pack|Special Order Item|Variety Box|Store Special;Assorted|Seasonal|Mixed|Limited Edition|Holiday|Regional|Special
"""

# Department-level qualifiers (brand-ish adjectives) and sizes, used to expand names.
QUALIFIERS = {
    "_": "Organic|Natural|Classic|Simple|Golden Valley|Harvest Farms|Blue Ridge|Sunny Meadow|"
    "Green Acre|Cedar Creek|Prairie Gold|Store Brand|Premium",
    4: "Organic|Fresh|Local|Farm Fresh|Hydroponic|Heirloom|Sun Ripened|Greenhouse",
    16: "Organic|Grassfed|Farmhouse|Valley Fresh|Meadow Gold|Clover Hill|Store Brand|Whole Farm",
    11: "Gentle|Daily|Pure|Clinical|Naturals|Botanical|Everyday|Advanced|Essential",
    17: "Eco|Everyday|Ultra|Pure|Green Home|Max|Store Brand|Simple",
    5: "Valley|Cellars|Brewing Co|Ridge|Coastal|Harbor|Old Town",
    18: "Organic|Gentle|Little Sprout|Tiny Tots|Happy Baby Style|Pure|Natural",
}
SIZES = {
    "_": "8 oz|12 oz|16 oz|Family Size|Value Pack|Snack Pack|32 oz",
    4: "1 lb|2 lb Bag|Bunch|5 oz|Clamshell|Each|3 lb Bag",
    7: "12 Pack|6 Pack|1 L|2 L|32 fl oz|24 Pack|64 oz",
    5: "750 ml|6 Pack|12 Pack|1.5 L|Can|Box",
    11: "Travel Size|2 Pack|3 Pack|Value Size|4 oz|8 fl oz",
    17: "2 Pack|6 Count|12 Count|Mega Pack|Refill|Large",
    18: "Jumbo Pack|Value Pack|4 oz|Trial Size|24 Count|Giant Pack",
}

# Latent order occasions and the aisles each one boosts (log-multiplier OCCASION_BETA).
# 'weekly_restock' is the neutral baseline occasion: no aisle shift, bigger basket.
OCCASIONS = (
    "weekly_restock",
    "weeknight_dinner",
    "healthy_eating",
    "party",
    "snacks",
    "breakfast",
    "household",
    "baby",
)
# population mix; the neutral weekly_restock is rare (was 0.28) so occasions carry signal
OCCASION_P = np.array([0.08, 0.25, 0.19, 0.08, 0.14, 0.13, 0.09, 0.04])
OCCASION_AISLES = {
    "weekly_restock": "",
    "weeknight_dinner": "poultry|beef|pork|sausages hot dogs|fish seafood|dry pasta|pasta sauce|"
    "grains rice|boxed dinners|frozen meals|frozen pizza|fresh herbs|"
    "spices seasonings|marinades sauces|tortillas flatbreads|mexican foods|"
    "asian foods|soup broth",
    "healthy_eating": "fresh vegetables|packaged greens|fresh fruits|cut fruit vegetables|"
    "fresh herbs|yogurt|plant milks|tofu meat alternatives|grains rice|"
    "nuts seeds|granola|hummus dips salsa|eggs|frozen fruit",
    "party": "chips|hummus dips salsa|beer|red wine|white wine|spirits|hard seltzer cider|"
    "soft drinks|plates cups|popcorn pretzels|crackers|specialty cheese|deli meats|"
    "candy chocolate|ice cream|frozen appetizers|sparkling water",
    "snacks": "chips|crackers|cookies cakes|candy chocolate|nuts seeds|popcorn pretzels|"
    "granola energy bars|fruit snacks|dried fruit trail mix|rice cakes|"
    "energy sports drinks|ice cream",
    "breakfast": "cold cereal|hot cereal|granola|breakfast bars pastries|eggs|milk|bacon|"
    "coffee|juice nectars|sandwich breads|bagels|frozen breakfast|spreads|"
    "honey syrups|butter|cream creamers",
    "household": "paper goods|laundry|dish detergent|cleaning supplies|trash bags food storage|"
    "air fresheners candles|batteries light bulbs|kitchen supplies|pest control|"
    "body wash soap|oral care|shampoo conditioner",
    "baby": "baby food|diapers wipes|baby formula|baby care|fruit snacks|yogurt|milk|"
    "fresh fruits|canned fruit",
}


# -----------------------------------------------------------------------------
# catalogue


def _parse_aisles():
    rows = []
    for line in AISLES.strip().splitlines():
        name, dept, w, nouns, mods = line.split(";")
        rows.append((name, int(dept), float(w), nouns.split("|"), mods.split("|")))
    return rows


def _aisle_names(dept, nouns, mods, rng):
    """Yield candidate names for one aisle, simplest first (those get the popular ranks)."""
    quals = QUALIFIERS.get(dept, QUALIFIERS["_"]).split("|")
    sizes = SIZES.get(dept, SIZES["_"]).split("|")
    mods = [""] + mods
    levels = [  # the plain nouns in listed order (most common first), then shuffled levels
        [(n,) for n in nouns],
        [(m, n) for n in nouns for m in mods[1:]] + [(q, n) for q in quals[:2] for n in nouns],
        [(q, m, n) for q in quals for n in nouns for m in mods],
        [(m, n, s) for n in nouns for m in mods for s in sizes],
        [(q, m, n, s) for q in quals for n in nouns for m in mods for s in sizes],
    ]
    for li, combos in enumerate(levels):
        for i in rng.permutation(len(combos)) if li else range(len(combos)):
            words = [w for w in combos[i] if w]
            vocab = [set(w.lower().split()) for w in words]
            if any(vocab[j] & vocab[k] for j in range(len(words)) for k in range(j)):
                continue  # no "Mixed Mixed Pack", "Organic Organic ..."
            yield " ".join(words)


def build_catalogue(n_products: int, seed: int = 42):
    """Departments, aisles and products (names, aisle, department, within-aisle pop rank)."""
    rng = np.random.default_rng([seed, 1])
    spec = _parse_aisles()
    aisle_dept = np.array([d for _, d, _, _, _ in spec])
    aisle_w = np.array([w for _, _, w, _, _ in spec])
    # products per aisle: department's catalogue share, split by sqrt(weight) inside it
    share = np.zeros(len(spec))
    for d in range(1, 22):
        m = aisle_dept == d
        share[m] = (
            DEPT_PRODUCTS[d - 1]
            / DEPT_PRODUCTS.sum()
            * np.sqrt(aisle_w[m])
            / np.sqrt(aisle_w[m]).sum()
        )
    counts = np.maximum(1, np.floor(share * n_products)).astype(int)
    counts[np.argsort(-share)[: max(0, n_products - counts.sum())]] += 1  # hand out remainder
    while counts.sum() > n_products:  # tiny catalogues: take back from the largest aisles
        counts[np.argmax(counts)] -= 1
    names, aisle_of, rank_of, seen = [], [], [], set()
    for a, (aname, dept, _, nouns, mods) in enumerate(spec):
        k = 0
        for name in _aisle_names(dept, nouns, mods, rng):
            if k == counts[a]:
                break
            if name not in seen:
                seen.add(name)
                names.append(name)
                aisle_of.append(a)
                rank_of.append(k)
                k += 1
        assert k == counts[a], f"aisle {aname!r} ran out of names"
    aisle_of, rank_of = np.array(aisle_of), np.array(rank_of)
    perm = rng.permutation(len(names))  # product_id order is unrelated to aisle, as in Kaggle
    products = pd.DataFrame(
        {
            "product_id": np.arange(1, len(names) + 1),
            "product_name": np.array(names, dtype=object)[perm],
            "aisle_id": aisle_of[perm] + 1,
            "department_id": aisle_dept[aisle_of[perm]],
        }
    )
    aisles = pd.DataFrame({"aisle_id": np.arange(1, len(spec) + 1), "aisle": [s[0] for s in spec]})
    departments = pd.DataFrame({"department_id": np.arange(1, 22), "department": DEPARTMENTS})
    return products, aisles, departments, rank_of[perm], aisle_w


class ItemModel(NamedTuple):
    """What the basket model needs of the catalogue. Items are indexed in (aisle, popularity
    rank) order; `order` maps each back to its row of the products table."""

    order: np.ndarray  # (P,) products row of each item
    aisle: np.ndarray  # (P,) aisle of each item
    cdf: np.ndarray  # (P,) aisle + popularity cdf within the aisle (for searchsorted)
    vec: np.ndarray  # (P, LATENT_DIM) latent item styles
    aisle_base: np.ndarray  # (A,) base share of rows of each aisle
    prof: np.ndarray  # (n_occasions, A) 0/1: the aisles each occasion boosts
    cart_bonus: np.ndarray  # (A,) add-to-cart head start of each aisle


def _aisle_base(dept_of_aisle, aisle_w, prof):
    """Each aisle's base share of rows (sums to 1).

    The department row share (target, times its calibration fix) split by aisle weight,
    divided by the mean occasion boost so that occasions shift orders without moving totals.
    """
    aisle_base = np.zeros(len(dept_of_aisle))
    for d in range(1, 22):
        m = dept_of_aisle == d
        aisle_base[m] = DEPT_ROW_SHARE[d - 1] * DEPT_FIX[d - 1] * aisle_w[m] / aisle_w[m].sum()
    aisle_base /= OCCASION_P @ np.exp(OCCASION_BETA * prof)
    aisle_base /= aisle_base.sum()
    return aisle_base


def _popularity_cdf(rank, aisle_of_item, n_aisles):
    """Within-aisle Zipf popularity as one sorted cdf over items in (aisle, rank) order.

    Returns order (products row of each sorted item), a_sorted (its aisle) and item_cdf
    (aisle + cumulative share within the aisle), so that searchsorted(item_cdf, aisle + u)
    draws an item of that aisle by popularity.
    """
    order = np.lexsort((rank, aisle_of_item))
    pop = (rank[order] + 1.0) ** -ZIPF_S
    a_sorted = aisle_of_item[order]
    tot = np.bincount(a_sorted, weights=pop, minlength=n_aisles)
    cs = np.cumsum(pop)
    a_start = np.concatenate([[0], np.cumsum(np.bincount(a_sorted, minlength=n_aisles))[:-1]])
    before = np.concatenate([[0], cs])[a_start][a_sorted]
    item_cdf = a_sorted + (cs - before) / tot[a_sorted]
    return order, a_sorted, item_cdf


def _item_model(products, aisles, rank, aisle_w, seed) -> ItemModel:
    """The catalogue as the basket model sees it (see ItemModel); returns an ItemModel."""
    P, A = len(products), len(aisles)
    aisle_of_item = products.aisle_id.to_numpy() - 1
    dept_of_aisle = np.zeros(A, int)
    dept_of_aisle[aisle_of_item] = products.department_id.to_numpy()
    prof = _occasion_profile(aisles.aisle.tolist())
    order, a_sorted, item_cdf = _popularity_cdf(rank, aisle_of_item, A)
    # latent item styles (rows in the (aisle, rank) order above), own stream: the catalogue
    # and the other draws do not depend on LATENT_DIM
    item_vec = np.random.default_rng([seed, 3]).standard_normal((P, LATENT_DIM))
    return ItemModel(
        order=order,
        aisle=a_sorted,
        cdf=item_cdf,
        vec=item_vec,
        aisle_base=_aisle_base(dept_of_aisle, aisle_w, prof),
        prof=prof,
        cart_bonus=np.array([CART_BONUS.get(d, 0.0) for d in dept_of_aisle]),
    )


# -----------------------------------------------------------------------------
# users and orders


def _occasion_profile(aisle_names):
    """(n_occasions, n_aisles) 0/1 matrix of the aisles each occasion boosts."""
    idx = {a: i for i, a in enumerate(aisle_names)}
    prof = np.zeros((len(OCCASIONS), len(aisle_names)))
    for o, occ in enumerate(OCCASIONS):
        for a in filter(None, OCCASION_AISLES[occ].split("|")):
            prof[o, idx[a]] = 1.0
    return prof


def _sample_days(rng, n_orders, n_total):
    """days_since_prior_order for every order (NaN on each user's first)."""
    U = len(n_orders)
    log_c = GAP_LOG_A - GAP_LOG_B * np.log(n_orders) + GAP_USER_SD * rng.standard_normal(U)
    gap = np.exp(np.repeat(log_c, n_orders) + GAP_ORDER_SD * rng.standard_normal(n_total))
    weekly = (rng.random(n_total) < WEEKLY_SNAP) & (gap >= 3.5)
    gap = np.where(weekly, np.round(gap / 7) * 7, gap)
    days = np.minimum(np.floor(gap), 30.0)  # Instacart caps the gap at 30 days
    first = np.zeros(n_total, bool)
    first[np.concatenate([[0], np.cumsum(n_orders)[:-1]])] = True
    days[first] = np.nan
    return days


def _sticky(rng, p, n_orders, n_total):
    """A user's usual value kept with prob USER_TIME_STICKY, else a fresh draw; marginal = p."""
    usual = np.repeat(rng.choice(len(p), size=len(n_orders), p=p), n_orders)
    fresh = rng.choice(len(p), size=n_total, p=p)
    return np.where(rng.random(n_total) < USER_TIME_STICKY, usual, fresh)


class Pool(NamedTuple):
    """The users' repertoires: one entry per distinct (user, item), sorted by user, then item."""

    user: np.ndarray  # user (index in the chunk) of each entry
    item: np.ndarray  # item of each entry
    logw: np.ndarray  # log affinity: log(times drawn) + lognormal noise
    aisle: np.ndarray  # aisle of the entry's item
    size: np.ndarray  # (U,) entries per user
    start: np.ndarray  # (U,) index of each user's first entry


def _user_tastes(rng, n_users, aisle_base, prof):
    """Each user's occasion mix and aisle taste (Dirichlet-like, boosted by that mix).

    Returns occ_mix (U, n_occasions) and taste (U, n_aisles), each row summing to 1.
    """
    U, A = n_users, len(aisle_base)
    # occasion mix per user; only baby households have 'baby' orders
    has_baby = rng.random(U) < BABY_USER_SHARE
    occ_alpha = np.tile(OCCASION_P * 3.0, (U, 1))
    occ_alpha[:, -1] = np.where(has_baby, 1.5, 1e-9)
    occ_mix = rng.gamma(occ_alpha)
    occ_mix /= occ_mix.sum(1, keepdims=True)
    boost = occ_mix @ np.exp(OCCASION_BETA * prof)  # (U, A) expected occasion boost
    taste = rng.gamma(TASTE_CONC * aisle_base, size=(U, A)) * boost
    taste /= taste.sum(1, keepdims=True)
    return occ_mix, taste


def _user_pools(rng, taste, n_ord, bmean, model: ItemModel) -> Pool:
    """Each user's repertoire: K draws of (aisle ~ taste, item ~ popularity within aisle,
    matched to the user's latent style), deduplicated; items drawn more often weigh more.

    Returns a Pool.
    """
    U, A = taste.shape
    n_products = len(model.order)
    # K draws per user: the aisle of each draw ~ the user's taste
    K = np.maximum(8, np.round(POOL_A * (n_ord * bmean) ** POOL_B)).astype(np.int64)
    draw_user = np.repeat(np.arange(U), K)
    cdf = np.cumsum(taste, 1)
    cdf[:, -1] = 1.0
    cdf += np.arange(U)[:, None]
    aisle = np.searchsorted(cdf.ravel(), draw_user + rng.random(len(draw_user))) - draw_user * A
    aisle = np.clip(aisle, 0, A - 1)
    # ... each draw picks, among LATENT_CANDIDATES items of that aisle drawn by popularity,
    # the one that best matches the user's latent style (Gumbel-max of user . item vectors)
    cand = np.searchsorted(model.cdf, aisle[:, None] + rng.random((len(aisle), LATENT_CANDIDATES)))
    cand = np.minimum(cand, n_products - 1)
    user_vec = LATENT_USER_SD * rng.standard_normal((U, model.vec.shape[1]))
    fit = np.einsum("kcd,kd->kc", model.vec[cand], user_vec[draw_user])
    pick = np.argmax(fit - np.log(-np.log(rng.random(fit.shape))), 1)
    item = cand[np.arange(len(cand)), pick]
    # deduplicate: one pool entry per (user, item), weighted by its draw count
    pool_key, pool_cnt = np.unique(draw_user * n_products + item, return_counts=True)
    pool_user, pool_item = pool_key // n_products, pool_key % n_products
    pool_logw = np.log(pool_cnt) + AFFINITY_SD * rng.standard_normal(len(pool_key))
    pool_size = np.bincount(pool_user, minlength=U)
    return Pool(
        user=pool_user,
        item=pool_item,
        logw=pool_logw,
        aisle=model.aisle[pool_item],
        size=pool_size,
        start=np.concatenate([[0], np.cumsum(pool_size)[:-1]]),
    )


def _order_occasions(rng, occ_mix, n_ord, bmean, pool_size):
    """The occasion and basket size of every order (users in turn, orders in time order).

    Returns order_user (the user of each order), occ (index into OCCASIONS) and bsize (items
    in the basket, never more than the user's pool holds), one entry per order.
    """
    O = len(OCCASIONS)
    n_tot = int(n_ord.sum())
    order_user = np.repeat(np.arange(len(n_ord)), n_ord)
    cum = np.cumsum(occ_mix, 1)[order_user]
    occ = (rng.random(n_tot)[:, None] > cum).sum(1).clip(0, O - 1)
    size_mult = np.array([OCCASION_SIZE.get(o, 1.0) for o in OCCASIONS])[occ]
    lam = rng.gamma(BASKET_SHAPE, (bmean[order_user] * size_mult - 1) / BASKET_SHAPE)
    bsize = np.minimum(1 + rng.poisson(lam), pool_size[order_user])
    return order_user, occ, bsize


def _fill_baskets(rng, pool: Pool, order_user, occ, bsize, prof):
    """Each order's basket: its top-bsize pool entries by key = affinity + occasion boost +
    Gumbel noise (weighted sampling without replacement).

    Returns r_order (order index) and r_pool (pool entry) of every basket row, by order.
    """
    # every (order, pool entry) pair of the order's user
    ent_n = pool.size[order_user]
    ent_order = np.repeat(np.arange(len(order_user)), ent_n)
    ent_start = np.concatenate([[0], np.cumsum(ent_n)[:-1]])
    ent_pool = pool.start[order_user][ent_order] + np.arange(len(ent_order)) - ent_start[ent_order]
    key = (
        pool.logw[ent_pool]
        + OCCASION_BETA * prof[occ[ent_order], pool.aisle[ent_pool]]
        - np.log(-np.log(rng.random(len(ent_pool))))
    )
    # sort by order, then key descending, and keep each order's first bsize pairs
    srt = np.argsort(ent_order + 1.0 / (1.0 + np.exp(np.clip(0.5 * key, -30, 30))))
    rank = np.arange(len(srt)) - ent_start[ent_order[srt]]
    keep = srt[rank < bsize[ent_order[srt]]]
    return ent_order[keep], ent_pool[keep]


def _reordered(r_order, ukey):
    """Whether each row's (user, item) key was bought in an earlier order (orders are in time
    order, so: not the key's first row). Returns int8 0/1 aligned with the rows."""
    s = np.lexsort((r_order, ukey))
    first = np.ones(len(s), bool)
    first[1:] = ukey[s][1:] != ukey[s][:-1]
    reordered = np.empty(len(s), np.int8)
    reordered[s] = ~first
    return reordered


def _cart_positions(rng, r_order, reordered, aisle_bonus, n_orders):
    """add_to_cart_order: usual items and produce/dairy first, with noise, ranked per order.

    Returns srt, the permutation that sorts the rows by (order, cart position), and cart,
    the 1-based cart position of each row in that sorted order.
    """
    ck = CART_REORDER_BONUS * reordered + aisle_bonus + rng.standard_normal(len(r_order))
    srt = np.argsort(r_order + 1.0 / (1.0 + np.exp(np.clip(0.5 * ck, -30, 30))))
    r_sorted = r_order[srt]
    o_start = np.concatenate([[0], np.cumsum(np.bincount(r_sorted, minlength=n_orders))[:-1]])
    cart = np.arange(len(r_sorted)) - o_start[r_sorted] + 1
    return srt, cart


def _user_chunk(rng, n_ord, bmean, model: ItemModel):
    """Items for every order of a chunk of users, fully vectorised.

    Model: a user's repertoire ("pool") is drawn from (taste over aisles, boosted by the
    user's occasion mix) x (item popularity within aisle); items drawn more than once
    weigh more. Each order has an occasion; its basket is the top-B of
    log(affinity) + occasion boost + Gumbel noise over the pool (weighted sampling
    without replacement), so staples recur (reorders) and the pool's tail is explored
    slowly. Cart order follows the same key plus a produce/dairy bonus.
    Returns per-order occasions and rows (order index, item, add_to_cart, reordered),
    rows sorted by order, then cart position.
    """
    occ_mix, taste = _user_tastes(rng, len(n_ord), model.aisle_base, model.prof)
    pool = _user_pools(rng, taste, n_ord, bmean, model)
    order_user, occ, bsize = _order_occasions(rng, occ_mix, n_ord, bmean, pool.size)
    r_order, r_pool = _fill_baskets(rng, pool, order_user, occ, bsize, model.prof)
    reordered = _reordered(r_order, pool.user[r_pool] * len(model.order) + pool.item[r_pool])
    aisle_bonus = model.cart_bonus[pool.aisle[r_pool]]
    srt, cart = _cart_positions(rng, r_order, reordered, aisle_bonus, len(occ))
    r_order, r_pool, reordered = r_order[srt], r_pool[srt], reordered[srt]
    return occ, r_order, pool.item[r_pool], cart, reordered


def _users(rng, n_users):
    """Per-user scalars: returns n_ord (orders per user, 4..100) and bmean (typical basket)."""
    n_ord = np.clip(
        np.round(np.exp(ORDERS_LOG_MU + ORDERS_LOG_SD * rng.standard_normal(n_users))), 4, 100
    ).astype(np.int64)
    bmean = np.exp(BASKET_LOG_MU + BASKET_LOG_SD * rng.standard_normal(n_users)) + 1.0
    return n_ord, bmean


def _orders_table(rng, n_ord) -> dict:
    """Every order of every user: users in turn, each user's orders in time order.

    Returns a dict of per-order columns: order_id (a random permutation, unrelated to
    time, as in Kaggle), user_id, order_number, eval_code (0 prior, 1 train, 2 test: the
    last order), days (days since prior order, NaN on each user's first), dow and hour.
    """
    n_users, n_tot = len(n_ord), int(n_ord.sum())
    o_start = np.concatenate([[0], np.cumsum(n_ord)[:-1]])
    order_number = np.arange(n_tot) - np.repeat(o_start, n_ord) + 1
    orders = {
        "order_id": rng.permutation(n_tot).astype(np.int64) + 1,
        "user_id": np.repeat(np.arange(1, n_users + 1), n_ord),
        "order_number": order_number,
    }
    is_last = order_number == np.repeat(n_ord, n_ord)
    last_train = rng.random(n_users) < TRAIN_SHARE
    orders["eval_code"] = np.where(is_last, np.where(np.repeat(last_train, n_ord), 1, 2), 0)
    orders["days"] = _sample_days(rng, n_ord, n_tot)
    orders["dow"] = _sticky(rng, DOW_P, n_ord, n_tot)
    orders["hour"] = _sticky(rng, HOUR_P, n_ord, n_tot)
    return orders


def _order_items(seed, n_ord, bmean, orders, model: ItemModel, progress):
    """The items of every order, USER_CHUNK users at a time (each chunk its own stream).

    Returns the occasion of every order (int8, index into OCCASIONS) and the rows of the
    prior and train orders (test orders have no items in the Kaggle release) as 5 columns:
    order_id, product_id, add_to_cart_order, reordered, is_train.
    """
    order_id, eval_code = orders["order_id"], orders["eval_code"]
    n_users = len(n_ord)
    o_start = np.concatenate([[0], np.cumsum(n_ord)[:-1]])
    occasion = np.zeros(len(order_id), np.int8)
    parts = []
    chunks = range(0, n_users, USER_CHUNK)
    seeds = np.random.SeedSequence([seed, 2]).spawn(len(chunks))
    for c, u0 in enumerate(tqdm(chunks, desc="users", unit="chunk", disable=not progress)):
        u1 = min(u0 + USER_CHUNK, n_users)
        crng = np.random.default_rng(seeds[c])
        occ, r_ord, r_item, cart, reord = _user_chunk(crng, n_ord[u0:u1], bmean[u0:u1], model)
        # chunk-local order indices -> global ones
        g = o_start[u0]
        occasion[g : g + len(occ)] = occ
        r_ord = r_ord + g
        keep = eval_code[r_ord] != 2  # test orders have no items in the Kaggle release
        parts.append(
            (
                order_id[r_ord[keep]].astype(np.int32),
                (model.order[r_item[keep]] + 1).astype(np.int32),
                cart[keep].astype(np.int16),
                reord[keep],
                eval_code[r_ord[keep]] == 1,
            )
        )
    return occasion, [np.concatenate([p[i] for p in parts]) for i in range(5)]


# -----------------------------------------------------------------------------
# writing


def _write_csv(table: pa.Table, path: Path):
    """Write table to path as Kaggle writes its CSVs: no quotes, header first."""
    pacsv.write_csv(
        table,
        path,
        pacsv.WriteOptions(quoting_style="none", quoting_header="none", batch_size=1 << 16),
    )


def _strings(codes, labels):
    """Integer codes -> an Arrow string column of labels[code]."""
    return pa.DictionaryArray.from_arrays(codes, labels).cast(pa.string())


def _write_orders(path: Path, orders: dict):
    """orders.csv in generation order; days_since_prior_order reads '7.0', or empty."""
    days = orders["days"]
    days_str = pc.binary_join_element_wise(
        pc.cast(pa.array(days, mask=np.isnan(days)).cast(pa.int64()), pa.string()), ".0", ""
    )
    table = {
        "order_id": orders["order_id"],
        "user_id": orders["user_id"],
        "eval_set": _strings(orders["eval_code"].astype(np.int8), ["prior", "train", "test"]),
        "order_number": orders["order_number"],
        "order_dow": orders["dow"],
        "order_hour_of_day": orders["hour"],
        "days_since_prior_order": days_str,
    }
    _write_csv(pa.table(table), path)


def _write_occasions(path: Path, order_id, occasion):
    """order_occasions.csv: each order's latent occasion, sorted by order_id."""
    s = np.argsort(order_id)
    table = {"order_id": order_id[s], "occasion": _strings(occasion[s], list(OCCASIONS))}
    _write_csv(pa.table(table), path)


def _write_order_products(out: Path, rows: list):
    """order_products__prior.csv and __train.csv from the 5 row columns of _order_items,
    each sorted by order, then cart position (as the Kaggle files are)."""
    for name, sel in (("prior", ~rows[4]), ("train", rows[4])):
        oid, pid, cart, reord = (c[sel] for c in rows[:4])
        s = np.lexsort((cart, oid))
        table = {
            "order_id": oid[s],
            "product_id": pid[s],
            "add_to_cart_order": cart[s],
            "reordered": reord[s],
        }
        _write_csv(pa.table(table), out / f"order_products__{name}.csv")
        del oid, pid, cart, reord, s, table


def _write_sample(out_dir: Path, frames: dict, orders: dict, occasion, rows: list, meta: dict):
    """Write every file of the sample into a temp dir next to out_dir, then rename it to
    out_dir (replacing an old one), so a killed run never leaves a half sample that looks
    complete. frames: file name -> catalogue DataFrame; meta goes to generator.json."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp", dir=out_dir.parent))
    try:
        for name, frame in frames.items():
            frame.to_csv(tmp / name, index=False)
        _write_orders(tmp / "orders.csv", orders)
        _write_occasions(tmp / "order_occasions.csv", orders["order_id"], occasion)
        _write_order_products(tmp, rows)
        (tmp / "generator.json").write_text(json.dumps(meta) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -----------------------------------------------------------------------------
# the sample


def generate(
    out_dir: str | Path,
    n_users: int = 5000,
    n_products: int = 10000,
    seed: int = 42,
    progress: bool = True,
) -> Path:
    """Write the 6 Kaggle CSVs + order_occasions.csv into out_dir (created), return out_dir.

    Written to a temp dir next to out_dir and renamed at the end, so a killed run never
    leaves a half sample that looks complete. Same arguments -> byte-identical files.
    """
    out_dir = Path(out_dir)
    assert n_users >= 1 and n_products >= 2 * len(_parse_aisles()), "too small a sample"
    rng = np.random.default_rng(seed)
    products, aisles, departments, rank, aisle_w = build_catalogue(n_products, seed)
    model = _item_model(products, aisles, rank, aisle_w, seed)
    # users and their orders (all users at once: cheap), then the items, a chunk at a time
    n_ord, bmean = _users(rng, n_users)
    orders = _orders_table(rng, n_ord)
    occasion, rows = _order_items(seed, n_ord, bmean, orders, model, progress)
    frames = {"products.csv": products, "aisles.csv": aisles, "departments.csv": departments}
    meta = {
        "version": GENERATOR_VERSION,
        "n_users": n_users,
        "n_products": n_products,
        "seed": seed,
    }
    _write_sample(out_dir, frames, orders, occasion, rows, meta)
    return out_dir


def add_size_args(ap: argparse.ArgumentParser, default_note: str = "") -> None:
    """The generator's options, shared with calibration.py: --out-dir, --users, --items,
    --seed, --kaggle-size. The project's one vocabulary: --items is a number of products in
    every script; --full in the scripts means "no sampling", so the Kaggle size here is
    --kaggle-size. The older spellings (--out, --products, --full) still parse, unlisted."""
    ap.add_argument(
        "--out-dir", help="output folder for the Kaggle-layout CSVs (default data/sample)"
    )
    ap.add_argument("--users", type=int, help=f"number of users (default 5000{default_note})")
    ap.add_argument(
        "--items", type=int, help=f"catalogue size, products (default 10000{default_note})"
    )
    ap.add_argument("--seed", type=int, default=42, help="random seed; same seed -> same bytes")
    ap.add_argument(
        "--kaggle-size",
        action="store_true",
        help=f"Kaggle's size: {FULL_USERS:,} users x {FULL_PRODUCTS:,} products",
    )
    ap.add_argument("--out", dest="out_dir", help=argparse.SUPPRESS)
    ap.add_argument("--products", dest="items", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--full", dest="kaggle_size", action="store_true", help=argparse.SUPPRESS)


def sizes_from_args(args) -> tuple[int | None, int | None]:
    """(users, items) asked for: --kaggle-size fills whichever of the two is not given."""
    if args.kaggle_size:
        return args.users or FULL_USERS, args.items or FULL_PRODUCTS
    return args.users, args.items


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_size_args(ap)
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    users, items = sizes_from_args(args)
    out = Path(args.out_dir or "data/sample")
    t0 = time.time()
    generate(out, users or 5000, items or 10000, args.seed, progress=not args.quiet)
    print(f"wrote {out} in {time.time() - t0:.1f}s (generator {GENERATOR_VERSION})")


if __name__ == "__main__":
    main()
